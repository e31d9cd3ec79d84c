"""Several tool runs in one torchrun job, for tests/test_distributed.py (one job's start-up,
the interpreters' imports and the process group, for all of them):

    python -m torch.distributed.run ... tests/dist_tools.py TOOL.py ARGS --then TOOL.py ARGS ...

runs each tool's `__main__` (as `python TOOL.py ARGS` would) in every process, one after the
other, in one process group: the tools' own leaving of the group (lastreid.launch.finish)
waits for the other processes and keeps the group for the next tool; the last one leaves.
Exits with the first non-zero status.
"""

import runpy
import sys

import lastreid  # noqa: F401  (patches fastreid; must come first)
from lastreid import launch
from fastreid.utils import comm


def run(argv):
    sys.argv = list(argv)
    try:
        runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as end:
        return end.code if isinstance(end.code, int) else int(end.code is not None)
    return 0


def split(argv):
    """The command lines of `argv`, separated by --then (not "--", which torchrun's parser
    may drop)."""
    commands = [[]]
    for arg in argv:
        if arg == "--then":
            commands.append([])
        else:
            commands[-1].append(arg)
    return commands


def run_all(commands, leave=True):
    """Runs the command lines one after the other; the first non-zero status, else 0. The
    process group stays for what follows unless `leave`."""
    finish = launch.finish
    launch.finish = comm.synchronize  # a tool's end: wait for the others, stay in the group
    try:
        for command in commands:
            code = run(command)
            if code:
                return code
    finally:
        launch.finish = finish
    if leave:
        finish()
    return 0


if __name__ == "__main__":
    sys.exit(run_all(split(sys.argv[1:])))
