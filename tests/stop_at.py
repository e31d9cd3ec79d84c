"""Test harness: runs a tool in this process, stopped at one exact moment.

    python tests/stop_at.py MOMENT tools/train_net.py ARGS...

MOMENT is one of
    rename:NAME   the atomic rename of a temporary file onto NAME (its data is complete,
                  the rename not done),
    inference:N   the start of the N-th evaluation (inference pass) of this process,
    step:N        the start of the N-th training step of this process,
    final_test    the start of the test of the best checkpoint after training.
When the process gets there it writes `reached MOMENT` to the file descriptor named by
$STOP_AT_FD and waits, forever, to be killed. The patches live in this process only, so
the product has no test switches; a test decides when the kill lands, not the machine.
"""

import os
import runpy
import signal
import sys

import lastreid  # noqa: F401  (patches fastreid first, as the tools do)
from lastreid.engine import Trainer

from fastreid.engine import defaults


def _stop(moment):
    with os.fdopen(int(os.environ["STOP_AT_FD"]), "w") as channel:
        channel.write(f"reached {moment}\n")
    while True:
        signal.pause()


def _wrap(owner, name, should_stop, moment):
    original = getattr(owner, name)

    def wrapper(*args, **kwargs):
        if should_stop(*args, **kwargs):
            _stop(moment)
        return original(*args, **kwargs)

    setattr(owner, name, wrapper)


def _nth_call(n):
    calls = []

    def should_stop(*args, **kwargs):
        calls.append(1)
        return len(calls) == n

    return should_stop


def install(moment):
    kind, _, value = moment.partition(":")
    if kind == "rename":
        _wrap(os, "replace", lambda src, dst, **kw: os.path.basename(dst) == value, moment)
    elif kind == "inference":
        _wrap(defaults, "inference_on_dataset", _nth_call(int(value)), moment)
    elif kind == "step":
        _wrap(defaults.DefaultTrainer, "run_step", _nth_call(int(value)), moment)
    elif kind == "final_test":
        _wrap(Trainer, "test_best_checkpoint", lambda self: True, moment)
    else:
        raise SystemExit(f"stop_at.py: unknown moment {moment!r}")


if __name__ == "__main__":
    install(sys.argv[1])
    sys.argv = sys.argv[2:]
    runpy.run_path(sys.argv[0], run_name="__main__")
