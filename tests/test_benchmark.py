"""tools/benchmark.py on the default synthetic LaST (ResNet-18 at 64x32, 2 epochs): every
configs/LaST/*_R50.yml of the six default methods trains through tools/train_net.py and ends
with its LaST test, --eval-only of the kept checkpoint gives the same numbers, and each
method ends above a random-init model of the same architecture. The command is interrupted
(a SIGKILL of the second method's training mid-epoch, then a Ctrl-C of the benchmark) and
run again: the table it writes holds each run's own saved numbers. Plus fast-reid's MGN
through train_net.py, and the tool's one-line refusal of a run of another recipe."""

import csv
import os
import select
import signal
import subprocess
import sys

from lastreid.benchmark import DEFAULT_METHODS, METRICS, method_config
from lastreid.engine import Trainer, evaluate_weights
from lastreid.experiments import runs
from lastreid.run_results import read_run_results
from lastreid.startup import build_cfg

import pytest
import torch
from conftest import FAST_CPU_OPTS, load_tool

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STOP_AT = os.path.join(REPO, "tests", "stop_at.py")
INTERRUPTED = "mgn"  # the second method
# FAST_CPU_OPTS for two epochs of every recipe (conftest.py).
# fmt: off
OPTS = FAST_CPU_OPTS + [
    "SOLVER.MAX_EPOCH", "2",  # no decay in 2 epochs: FAST_CPU_OPTS' SOLVER.STEPS []
    "SOLVER.DELAY_EPOCHS", "1",  # SBS: its cosine starts after 30 epochs, here the last one
    "SOLVER.FREEZE_ITERS", "5",  # SBS: its backbone would stay frozen for 1,000 steps
    "TEST.IMS_PER_BATCH", "128",
    "MODEL.CPU_BF16", "off",  # float32: the margins below are not bf16 rounding
]
# fmt: on
# R18: BoT / AGW / SBS 512, MGN 8 x 256, PCB 6 x 512, HPM 15 x 256
DIMS = {"bagtricks": 512, "mgn": 2048, "pcb": 3072, "hpm": 3840, "agw": 512, "sbs": 512}


def killing_run_logged(target, moment, real):
    """experiments.runs.run_logged, but the training of `target` runs through
    tests/stop_at.py and is SIGKILLed when it reaches `moment`; then a KeyboardInterrupt, as
    a Ctrl-C would."""

    def run_logged(cmd, log_path, verbose=False, heartbeat=None, heartbeat_s=120.0):
        if runs.TRAIN_NET not in cmd or "--resume" not in cmd or not log_path.startswith(target):
            return real(cmd, log_path, verbose, heartbeat, heartbeat_s)
        read_end, write_end = os.pipe()
        env = dict(os.environ, STOP_AT_FD=str(write_end), PYTHONUNBUFFERED="1")
        with open(log_path, "w") as out:
            proc = subprocess.Popen(
                [sys.executable, STOP_AT, moment] + cmd[1:],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                pass_fds=(write_end,),
            )
        os.close(write_end)
        with os.fdopen(read_end) as channel:
            ready, _, _ = select.select([channel], [], [], 900)  # a hang guard only
            line = channel.readline().strip() if ready else ""
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert line == f"reached {moment}", open(log_path).read()[-2000:]
        raise KeyboardInterrupt

    return run_logged


@pytest.fixture(scope="module")
def bench(default_root, module_tmp):
    """The six default methods, interrupted once in the second's training, then the same
    command again; returns the output folder and the table's rows."""
    out = str(module_tmp.mktemp("benchmark"))
    argv = ["--output", out, "--heartbeat", "600"] + OPTS
    tool = load_tool("benchmark")
    target = os.path.join(out, "runs", INTERRUPTED)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FASTREID_DATASETS", str(default_root))  # the runs' data, not the session's
        patch.setattr(runs, "run_logged", killing_run_logged(target, "step:30", runs.run_logged))
        with pytest.raises(KeyboardInterrupt):
            tool.main(argv)
        interrupted = {
            "rows": read_csv(os.path.join(out, "benchmark_table.csv")),
            "checkpoint": read_run_results(target),
            "files": sorted(os.listdir(target)),
        }
        patch.undo()
        patch.setenv("FASTREID_DATASETS", str(default_root))
        assert tool.main(argv) == 0
    return dict(out=out, rows=read_csv(os.path.join(out, "benchmark_table.csv")), first=interrupted)


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def run_dir(bench, method):
    return os.path.join(bench["out"], "runs", method)


def test_interrupted_benchmark_resumes_where_it_stopped(bench):
    first = bench["first"]
    assert [r["method"] for r in first["rows"]] == ["bagtricks"]  # the finished one only
    assert first["checkpoint"] == {}  # mgn had not finished: no results.json yet
    assert "model_0000.pth" in first["files"]  # ... but its first epoch was checkpointed
    metrics = [line for line in runner_metrics(run_dir(bench, INTERRUPTED)) if "total_loss" in line]
    iterations = [m["iteration"] for m in metrics]
    assert iterations == sorted(set(iterations))  # resumed: no step recorded twice
    evaluations = [m for m in runner_metrics(run_dir(bench, INTERRUPTED)) if "metric" in m]
    assert len(evaluations) == 2  # one LaSTVal evaluation per epoch, each once


def runner_metrics(folder):
    import json

    with open(os.path.join(folder, "metrics.json")) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_table_holds_each_runs_own_numbers(bench):
    rows = bench["rows"]
    assert [r["method"] for r in rows] == list(DEFAULT_METHODS)
    for row in rows:
        saved = read_run_results(run_dir(bench, row["method"]))["final_test"]
        assert row["epoch"] == str(saved["epoch"]) and 1 <= saved["epoch"] <= 2
        for key in METRICS:
            assert float(row[key]) == pytest.approx(saved["datasets"]["LaST"][key], abs=0.005)
        assert int(row["feature_dim"]) == DIMS[row["method"]]
        assert row["eval_only_reproduced"] == "True" and not row["error"]
        assert float(row["eval_seconds"]) > 0 and float(row["eval_peak_rss_gib"]) > 0
        assert float(row["train_images_per_s"]) > 0
        # Parameters: the trainable tensors of the kept checkpoint (buffers left out).
        state = torch.load(
            os.path.join(run_dir(bench, row["method"]), "model_best.pth"), weights_only=True
        )["model"]
        buffers = ("running_mean", "running_var", "num_batches_tracked")
        expected = sum(v.numel() for k, v in state.items() if not k.endswith(buffers))
        assert int(row["params"]) == expected


def test_markdown_table_and_chart_show_the_rows(bench):
    """benchmark_table.md: a line per method with the CSV's numbers rounded to one place;
    benchmark_chart.png: 12 x 4.2 inches at 100 dpi, not a blank canvas."""
    from PIL import Image

    with open(os.path.join(bench["out"], "benchmark_table.md")) as f:
        lines = f.read().splitlines()
    assert lines[2].startswith("| method | config | Rank-1 | Rank-5 |")
    for row, line in zip(bench["rows"], lines[4:], strict=True):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == row["method"] and cells[-1] == "yes"
        assert cells[2] == "{:.1f}".format(float(row["Rank-1"]))
        assert cells[8] == "{:.1f}".format(int(row["params"]) / 1e6)
    with Image.open(os.path.join(bench["out"], "benchmark_chart.png")) as image:
        assert image.size == (1200, 420)
        low, high = image.convert("L").getextrema()
        assert high - low > 100  # bars and text on the white background


def test_eval_only_of_each_kept_checkpoint_gives_the_runs_numbers(bench):
    for method in DEFAULT_METHODS:
        saved = read_run_results(run_dir(bench, method))["final_test"]["datasets"]["LaST"]
        again = read_run_results(os.path.join(run_dir(bench, method), "eval_only"))
        numbers = again["evaluation"]["datasets"]["LaST"]
        for key in METRICS:
            assert numbers[key] == pytest.approx(saved[key], abs=1e-6), (method, key)


def test_each_method_ends_above_its_random_init(bench, default_root, monkeypatch):
    """LaST test mAP of the kept checkpoint against the same architecture with its seeded
    random initialisation (evaluated here, in float32 as the runs: OPTS)."""
    monkeypatch.setenv("FASTREID_DATASETS", str(default_root))
    for method in DEFAULT_METHODS:
        saved = read_run_results(run_dir(bench, method))["final_test"]["datasets"]["LaST"]
        cfg = build_cfg(method_config(method)[1], OPTS + ["DATASETS.TESTS", '("LaST",)'])
        torch.manual_seed(0)
        random_init = Trainer.test(cfg, Trainer.build_model(cfg))
        # Margin: 1 point of mAP (%), well above run-to-run noise of a seeded float32 run; two
        # epochs gave each method several points over its random init when this was written.
        assert saved["mAP"] > random_init["mAP"] + 1, (method, saved, random_init)


def test_a_run_of_another_recipe_stops_the_command(bench, tmp_path):
    """A finished run made with SOLVER.MAX_EPOCH 2, asked for with 3: one line naming it
    (run_tool prints it), nothing trained."""
    from lastreid.errors import InputError, one_line

    out = tmp_path / "bench"
    os.makedirs(out / "runs")
    os.symlink(run_dir(bench, "hpm"), out / "runs" / "hpm")
    argv = ["--methods", "hpm", "--output", str(out)] + OPTS + ["SOLVER.MAX_EPOCH", "3"]
    with pytest.raises(InputError) as stopped:
        load_tool("benchmark").main(argv)
    message = str(stopped.value)
    assert message == one_line(message)
    assert str(out / "runs" / "hpm") in message and "another recipe" in message
    assert "--stale reuse" in message
    assert not (out / "benchmark_table.md").exists()


def test_table_formats_hand_made_rows():
    """The markdown and CSV of two rows, one failed: the numbers written by hand."""
    from lastreid.benchmark import Row, tables

    done = Row("bagtricks", "bagtricks_R50.yml", {m: 50.0 + i for i, m in enumerate(METRICS)})
    done.epoch, done.params, done.feature_dim = 2, 11_234_567, 512
    done.train_images_per_s, done.eval_seconds, done.eval_peak_gib = 123.456, 7.3, 1.234
    done.eval_reproduced = True
    failed = Row("mgn", "mgn_R50.yml", error="training failed")
    md, table = tables([done, failed])
    md = md.splitlines()
    assert md[2] == (
        "| method | config | Rank-1 | Rank-5 | Rank-10 | mAP | mINP | epoch | params (M) "
        "| feature dim | train img/s | eval s | eval peak GiB | eval-only = run |"
    )
    assert md[4:] == [
        "| bagtricks | bagtricks_R50.yml | 50.0 | 51.0 | 52.0 | 53.0 | 54.0 | 2 | 11.2 | 512 "
        "| 123.5 | 7.3 | 1.23 | yes |",
        "| mgn | mgn_R50.yml | error | - | - | - | - | - | - | - | - | - | - | - |",
    ]
    assert table[1:] == [
        ["bagtricks", "bagtricks_R50.yml", "50.00", "51.00", "52.00", "53.00", "54.00", 2]
        + [11_234_567, 512, "123.5", "7.3", "1.234", True, ""],
        ["mgn", "mgn_R50.yml"] + [""] * 12 + ["training failed"],
    ]


def test_a_method_is_a_config_file(tmp_path):
    """A name stands for configs/LaST/<name>_R50.yml in any case, a .yml path for itself; an
    unknown name or a missing file is one line naming it."""
    from lastreid.errors import InputError

    assert method_config("agw") == ("agw", os.path.join(REPO, "configs", "LaST", "AGW_R50.yml"))
    assert method_config("PCB")[1] == os.path.join(REPO, "configs", "LaST", "pcb_R50.yml")
    mine = tmp_path / "toy.yml"
    mine.write_text("_BASE_: x\n")
    assert method_config(str(mine)) == ("toy", str(mine))
    with pytest.raises(InputError, match="--methods nosuch: no configs/LaST/nosuch_R50.yml"):
        method_config("nosuch")
    with pytest.raises(InputError, match="no such config file"):
        method_config(str(tmp_path / "missing.yml"))


def test_fastreid_mgn_trains_through_train_net_and_eval_only_agrees(
    synthetic_root, tmp_path, monkeypatch
):
    """fast-reid's own MGN needs ResNet-50 (its part branches are Bottleneck stages) and at
    least 6 map rows (torch.chunk into 3): the tiny LaST at 96x32, one epoch."""
    env = dict(os.environ, FASTREID_DATASETS=str(synthetic_root), PYTHONUNBUFFERED="1")
    config, out = method_config("mgn_fastreid")[1], tmp_path / "run"
    # fmt: off
    opts = OPTS[:4] + [
        "INPUT.SIZE_TRAIN", "[96, 32]", "INPUT.SIZE_TEST", "[96, 32]", "SOLVER.MAX_EPOCH", "1",
        "SOLVER.IMS_PER_BATCH", "8", "DATALOADER.NUM_INSTANCE", "2", "SOLVER.WARMUP_ITERS", "0",
        "TEST.IMS_PER_BATCH", "16", "DATALOADER.NUM_WORKERS", "0", "SEED", "0",
        "SOLVER.DELAY_EPOCHS", "0", "TEST.EVAL_PERIOD", "1", "SOLVER.CHECKPOINT_PERIOD", "1",
        "OUTPUT_DIR", str(out),
    ]
    # fmt: on
    run = subprocess.run(
        [sys.executable, runs.TRAIN_NET, "--config-file", config] + opts,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    final = read_run_results(str(out))["final_test"]
    assert final["checkpoint"] == "model_best.pth" and final["epoch"] == 1
    saved = final["datasets"]["LaST"]
    monkeypatch.setenv("FASTREID_DATASETS", str(synthetic_root))
    weights = ["MODEL.WEIGHTS", str(out / "model_best.pth"), "DATASETS.TESTS", '("LaST",)']
    cfg = build_cfg(config, opts[:-2] + weights, eval_only=True)
    again = evaluate_weights(cfg)
    for key in METRICS:
        assert again[key] == pytest.approx(saved[key], abs=1e-6)


def test_a_part_model_run_is_a_transfer_row(
    bench, all_datasets_root, tmp_path, monkeypatch, capsys
):
    """The benchmark's PCB run as a row of the transfer table (--source): its direct and
    fine-tuned PRCC cells build PCB from the run's config.yaml, the direct cell loads every
    key of the checkpoint, and the fine-tune drops only the classifiers. On the tiny PRCC
    (5 training iterations of 8 images): what is checked is how the cells are built and
    loaded, not what they learn."""
    from lastreid.checkpoint import CLASSIFIER_NOT_LOADED
    from lastreid.modeling import feature_dim

    monkeypatch.setenv("FASTREID_DATASETS", str(all_datasets_root))
    tool = load_tool("transfer_matrix")
    output = tmp_path / "table"
    source = os.path.join(run_dir(bench, "pcb"), "model_best.pth")
    argv = ["--source", f"pcb={source}", "--datasets", "PRCC", "--output", str(output)]
    argv += ["--no-print-table"] + OPTS + ["SOLVER.MAX_EPOCH", "1", "SOLVER.DELAY_EPOCHS", "0"]
    argv += ["SOLVER.IMS_PER_BATCH", "8"]
    assert tool.main(argv) == 0
    assert capsys.readouterr().out.count(": done in ") == 2
    for setting in ("direct", "finetune"):
        run = output / "runs" / "pcb" / f"PRCC-{setting}"
        cfg = build_cfg(str(run / "config.yaml"), [])
        assert (cfg.MODEL.META_ARCHITECTURE, cfg.MODEL.HEADS.NAME) == ("PartBaseline", "PCBHead")
        assert feature_dim(cfg) == DIMS["pcb"]
        log = (run / "log.txt").read_text().splitlines()
        report = [line for line in log if " model keys from " in line]
        loaded, total = report[0].split("Loaded ")[1].split(" ")[0].split("/")
        if setting == "direct":
            assert loaded == total and "missing" not in report[0], report[0]
        else:
            assert CLASSIFIER_NOT_LOADED in report[0] and "heads.classifiers" in report[0]
    rows = read_csv(output / "transfer_table.csv")
    assert rows[0]["PRCC direct R1"] and rows[0]["PRCC fine-tuned R1"]
