"""Runs one command and records what it cost: `python measure.py OUT.json CMD ...` writes
{"returncode", "wall_s", "peak_rss_gib"} to OUT.json and exits with CMD's status. The peak
resident memory is getrusage(RUSAGE_CHILDREN) of this wrapper, whose only child CMD is:
the largest of CMD and its own children (data-loader workers).

`tools/benchmark.py` measures each method's `--eval-only` run through it, started by path
(`MEASURE`): it imports the standard library only, because importing lastreid (torch,
fastreid) would add seconds to every measured run. For the same reason it writes OUT.json
itself, as lastreid.atomic does (a temporary file, fsync, rename). A SIGTERM or SIGINT (an
interrupted benchmark) is passed on to CMD, so nothing is left running."""

import json
import os
import resource
import signal
import subprocess
import sys
import time

MEASURE = os.path.abspath(__file__)


def _write_json(record, path):
    # lastreid.atomic.write_atomic's steps and temporary name (`TEMP_FILE`, which
    # remove_stale_temp_files clears after a kill).
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, ".{}.tmp.{}.{}".format(name, os.getpid(), os.urandom(4).hex()))
    with open(tmp, "x") as f:
        f.write(json.dumps(record, indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) < 2:
        print("usage: python measure.py OUT.json CMD ...", file=sys.stderr)
        return 2
    out, cmd = argv[0], argv[1:]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)

    def pass_on(signum, _frame):
        proc.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, pass_on)
    code = proc.wait()
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB on Linux
    record = {
        "returncode": code,
        "wall_s": time.perf_counter() - t0,
        "peak_rss_gib": peak_kib / 2**20,
    }
    _write_json(record, out)
    return code


if __name__ == "__main__":
    sys.exit(main())
