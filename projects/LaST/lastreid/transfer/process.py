"""Running one train_net subprocess for the table tools (transfer, joint, benchmark): its
output to a file, a progress line now and then from its log, and the tail of that log when
it fails; and the command-line options those tools share."""

import argparse
import os
import subprocess
import time

__all__ = [
    "REPO",
    "TRAIN_NET",
    "add_run_options",
    "log_tail",
    "parse_run_args",
    "run_logged",
    "training_status",
]

REPO = os.path.dirname(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
)
TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")  # every cell and source run


def add_run_options(parser):
    """The options every table tool passes on to its train_net.py runs: --num-gpus,
    --verbose and the trailing KEY VALUE overrides (last: they take the rest)."""
    parser.add_argument("--num-gpus", type=int, default=0, help="passed to train_net.py")
    parser.add_argument(
        "--verbose", action="store_true", help="show the runs' output instead of logging it"
    )
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE overrides for every run")


def parse_run_args(parser, argv):
    """parser.parse_args(argv), the overrides after an optional "--" and in KEY VALUE pairs."""
    args = parser.parse_args(argv)
    if args.opts[:1] == ["--"]:
        args.opts = args.opts[1:]
    if len(args.opts) % 2:
        parser.error("overrides come in KEY VALUE pairs, got: " + " ".join(args.opts))
    return args


def run_logged(cmd, log_path, env=None, verbose=False, heartbeat=None, heartbeat_s=120.0):
    """Runs `cmd` with its output in `log_path` (on the console when `verbose`), calling
    heartbeat(elapsed seconds) every `heartbeat_s`; returns its exit code. An interrupt
    (KeyboardInterrupt, a kill of this process's Python) terminates the child first."""
    env = dict(os.environ if env is None else env)
    env.setdefault("PYTHONUNBUFFERED", "1")
    t0 = time.time()
    with open(os.devnull if verbose else log_path, "w") as f:
        out = None if verbose else f
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT if out else None)
        try:
            while True:
                try:
                    return proc.wait(timeout=heartbeat_s)
                except subprocess.TimeoutExpired:
                    if heartbeat is not None:
                        heartbeat(time.time() - t0)
        finally:
            if proc.poll() is None:  # interrupted: do not leave the run behind
                proc.terminate()
                proc.wait()


def training_status(run_dir):
    """ "; eta 0:05:09, epoch/iter 1/43, total_loss 5.97" from fastreid's last progress line in
    `run_dir`/log.txt, or "" when there is none yet."""
    try:
        with open(os.path.join(run_dir, "log.txt"), errors="replace") as f:
            lines = [line for line in f if "epoch/iter:" in line]
    except OSError:
        return ""
    if not lines:
        return ""
    words = lines[-1].split()
    return "; " + ", ".join(
        "{} {}".format(words[i].rstrip(":"), words[i + 1])
        for i in range(len(words) - 1)
        if words[i] in ("eta:", "epoch/iter:", "total_loss:")
    )


def log_tail(path, lines=15):
    """The last `lines` lines of a text file ([] when it cannot be read)."""
    try:
        with open(path, errors="replace") as f:
            return f.read().splitlines()[-lines:]
    except OSError:
        return []
