"""Test harness: many runs of the tools, each in a process of its own, for the start-up
cost of one.

    python tests/forked_runs.py CASES.json RESULTS.json

Imports torch, fastreid and lastreid once, then, one case of CASES.json at a time, forks a
child that runs the tool's own `__main__` (runpy, with sys.argv set) as `python tool.py
args...` would, its stdout and stderr going to files. A case is {"name", "argv": [tool.py,
args...], "moment": a moment of tests/stop_at.py or null, "output": a folder or null}: the
child stops there when it gets to the moment (and is then killed); an optional "env" dict is
set in the child's environment (its PYTHONPATH also put on sys.path, as a start would).
RESULTS.json gets, per name, {"status": the exit status or "reached <moment>", "stderr",
"stdout", "seconds", "output": the files written under "output", a folder or file (null if
it does not exist)}; it is removed afterwards (checkpoints are large). One child at a time: a
result never depends on another.
"""

import json
import os
import runpy
import select
import shutil
import signal
import sys
import time
import traceback

import stop_at  # imports lastreid (patching fastreid) and the Trainer, as the tools do
import torch

TIMEOUT = 600  # only a guard against a hung child


def _run_child(case, log_prefix, write_fd):
    for fd, suffix in ((1, ".out"), (2, ".err")):
        target = os.open(log_prefix + suffix, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(target, fd)
        os.close(target)
    os.environ["STOP_AT_FD"] = str(write_fd)
    os.environ.update(case.get("env") or {})
    # The interpreter reads PYTHONPATH once, at its start: a case's own goes on sys.path here.
    extra = (case.get("env") or {}).get("PYTHONPATH")
    if extra:
        sys.path[1:1] = extra.split(os.pathsep)
    if case.get("moment"):
        stop_at.install(case["moment"])
    sys.argv = list(case["argv"])
    code = 0
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as end:  # what the interpreter does with it
        if isinstance(end.code, str):
            print(end.code, file=sys.stderr)
        code = end.code if isinstance(end.code, int) else int(end.code is not None)
    except BaseException:
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _files(path):
    """The files under `path` (a folder), [its name] for a file, None if it is absent."""
    if path and os.path.isfile(path):
        return [os.path.basename(path)]
    if not path or not os.path.isdir(path):
        return None
    return sorted(
        os.path.relpath(os.path.join(top, name), path)
        for top, _, names in os.walk(path)
        for name in names
    )


def run_case(case, log_prefix):
    start = time.perf_counter()
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        _run_child(case, log_prefix, write_fd)
    os.close(write_fd)
    with os.fdopen(read_fd) as channel:
        ready, _, _ = select.select([channel], [], [], TIMEOUT)
        line = channel.readline().strip() if ready else "timed out"
    if line:  # reached its moment (or hung): it waits to be killed
        os.kill(pid, signal.SIGKILL)
    _, wait_status = os.waitpid(pid, 0)
    status = line or os.waitstatus_to_exitcode(wait_status)
    with open(log_prefix + ".err", errors="replace") as f:
        stderr = f.read()
    with open(log_prefix + ".out", errors="replace") as f:
        stdout = f.read()
    output = case.get("output")
    result = {"status": status, "stderr": stderr, "stdout": stdout, "output": _files(output)}
    result["seconds"] = round(time.perf_counter() - start, 2)  # for the record, never asserted
    if output and os.path.isdir(output):
        shutil.rmtree(output)
    elif output and os.path.exists(output):
        os.remove(output)
    return result


def main(cases_path, results_path):
    # One thread a child: on a machine shared with other processes OpenMP's threads wait
    # for each other, and a first training step took seconds instead of a fraction of one.
    torch.set_num_threads(1)
    with open(cases_path) as f:
        cases = json.load(f)
    logs = os.path.splitext(results_path)[0] + "_logs"
    os.makedirs(logs, exist_ok=True)
    results = {}
    for i, case in enumerate(cases):
        results[case["name"]] = run_case(case, os.path.join(logs, str(i)))
    with open(results_path, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
