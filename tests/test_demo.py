"""`make demo`'s tools/run_demo.py end to end at its smallest size (--smoke): what the README
says it writes (the BoT run with model_best.pth, curves.png and ranked lists, the transfer
table as .md / .csv with its chart) and prints (the time line, then the table). And each
benchmarks/*.py once at a tiny size: the structure of what it prints or writes, figures
positive and consistent, never their speed. The scripts whose work is in their own process
run as `python script.py` would (runpy, `__main__`) in the test's process, which has already
imported torch and fastreid; eval_scale.py, whose methods each run in a child, stays a
subprocess."""

import csv
import json
import os
import re
import runpy
import subprocess
import sys

import numpy as np
import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(REPO, "benchmarks")
CELL = re.compile(r"^(\d+\.\d) / (\d+\.\d)$")  # Rank-1 / mAP, in %


def run(args, **kwargs):
    proc = subprocess.run(
        [sys.executable] + args, cwd=REPO, capture_output=True, text=True, timeout=1200, **kwargs
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def run_here(args, monkeypatch, capfd):
    """Runs the script `args[0]` with its arguments in this process, as `python` would run
    it; returns what it printed (its children's output included). Its changes to the
    environment and to the global random streams are undone afterwards (later tests in
    this process must not see them)."""
    monkeypatch.setattr(sys, "argv", list(args))
    monkeypatch.setenv("FASTREID_DATASETS", os.environ.get("FASTREID_DATASETS", ""))
    capfd.readouterr()
    numpy_state = np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            runpy.run_path(args[0], run_name="__main__")
        code = 0
    except SystemExit as end:
        code = end.code
    finally:
        np.random.set_state(numpy_state)
    captured = capfd.readouterr()
    assert code in (0, None), captured.out[-2000:] + captured.err[-3000:]
    return captured.out


def test_run_demo_smoke_writes_and_prints_what_the_readme_says(tmp_path, monkeypatch, capfd):
    demo = [os.path.join(REPO, "tools", "run_demo.py"), "--smoke", "--workdir", str(tmp_path)]
    out = run_here(demo, monkeypatch, capfd)
    runs = tmp_path / "runs"
    bot, transfer = runs / "bot_synthetic_last", runs / "transfer"
    for name in ("model_best.pth", "model_final.pth", "results.json", "curves.png"):
        assert (bot / name).is_file(), name
    assert (bot / "ranks" / "ranks_000.png").is_file() and (bot / "ranks" / "cmc.png").is_file()
    for name in ("transfer_table.md", "transfer_table.csv", "transfer_chart.png"):
        assert (transfer / name).is_file(), name
    written = {p.name.lower() for p in (tmp_path / "datasets").iterdir()}
    assert {"last", "prcc", "celeb-reid"} <= written, written

    # Printed last: the time line, then the table exactly as written to transfer_table.md.
    table = (transfer / "transfer_table.md").read_text()
    assert out.endswith(table), out[-2000:]
    done = out[: -len(table)].rstrip("\n").splitlines()[-1]
    assert re.fullmatch(
        rf"\[demo\] done in \d+ s \(data \+ BoT \d+ s, transfer table \d+ s\); BoT run in "
        rf"{re.escape(str(bot))}, transfer runs, table \(\.md, \.csv\) and chart \(\.png\) in "
        rf"{re.escape(str(transfer))}",
        done,
    ), done
    rows = [line for line in table.splitlines() if line.startswith("| ")]
    assert rows[0] == "| pre-training | PRCC direct | PRCC fine-tuned |"
    cells = {}
    for line in rows[1:]:
        name, *values = [c.strip() for c in line.strip("|").split("|")]
        cells[name] = values
    assert set(cells) == {"random init", "synthetic-LaST"}
    for values in cells.values():
        for value in values:
            rank1, mean_ap = map(float, CELL.match(value).groups())
            assert 0 <= rank1 <= 100 and 0 < mean_ap <= 100, value
    # The CSV holds the same cells.
    with open(transfer / "transfer_table.csv") as f:
        csv_rows = list(csv.reader(f))
    assert len(csv_rows) >= 3 and {"random init", "synthetic-LaST"} <= {r[0] for r in csv_rows}


def test_cpu_throughput_tiny(tmp_path, monkeypatch, capfd):
    out = tmp_path / "cpu.json"
    args = ["--skip-quality", "--depth", "18x", "--size", "64", "32", "--batch", "4"]
    args += ["--train-iters", "1", "--infer-iters", "1", "--warmup", "0", "--num-classes", "10"]
    args += ["--modes", "fp32,cl", "--json", str(out)]
    printed = run_here([os.path.join(BENCHMARKS, "cpu_throughput.py")] + args, monkeypatch, capfd)
    figures = json.loads(out.read_text())
    assert set(figures["speed"]) == {"fp32", "cl"}
    for mode, speed in figures["speed"].items():
        assert speed["train"] > 0 and speed["infer"] > 0, mode
        assert 0 < speed["first_loss"] < 100, mode
        # The printed table row is the JSON's figure, rounded.
        row = next(line for line in printed.splitlines() if line.startswith(f"| {mode} "))
        assert f"{speed['train']:.2f}" in row and f"{speed['first_loss']:.4f}" in row, row
    # The same weights and batch: the layouts agree on the first loss (float32 both).
    assert figures["speed"]["cl"]["first_loss"] == pytest.approx(
        figures["speed"]["fp32"]["first_loss"], rel=1e-4
    )


def test_eval_scale_tiny():
    args = ["--num-query", "40", "--num-gallery", "1000", "--dim", "64"]
    args += ["--skip-api", "--skip-evaluator"]
    proc = run([os.path.join(BENCHMARKS, "eval_scale.py")] + args)
    out = proc.stdout
    assert "40 queries x 1000 gallery, dim 64" in out
    found = re.search(r"lastreid: R1 (\d\.\d+)  mAP (\d\.\d+)  mINP (\d\.\d+)", out)
    r1, mean_ap, minp = map(float, found.groups())
    assert 0 < minp <= mean_ap <= 1 and 0 < r1 <= 1  # mINP <= mAP; R1 a fraction
    for row in ("bare fp32 q @ g.T (blocks)", "lastreid rank_metrics", "fastreid build_dist+rank"):
        line = next(line for line in out.splitlines() if line.startswith(row))
        wall, cpu, rss = map(float, line[len(row) :].split()[:3])
        assert wall >= 0 and cpu >= 0 and rss > 0, line
    assert re.search(r"fastreid vs lastreid: max abs diff .* -> AGREE", out), out[-2000:]


def test_gpu_throughput_loader_figures_without_cuda(tmp_path, monkeypatch, capfd):
    out = tmp_path / "gpu.json"
    args = ["--loader-images", "16", "--train-ids", "8", "--json", str(out)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the loader figures only
    script = os.path.join(BENCHMARKS, "gpu_throughput.py")
    printed = run_here([script] + args, monkeypatch, capfd)
    figures = json.loads(out.read_text())
    loader = figures["loader_per_worker"]
    assert figures["gpu"] is None and "GPU figures skipped" in printed
    for key in ("train", "test", "train_per_cpu_second", "test_per_cpu_second"):
        assert loader[key] > 0, key
    line = next(line for line in printed.splitlines() if line.startswith("CPU loader"))
    assert f"{loader['train']:.0f} img/s training transforms" in line, line
