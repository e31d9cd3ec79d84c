"""The clothes-changing table (tools/clothes_table.py, lastreid.clothes_table): its columns are
the protocols each dataset declares, its cells are the runs' saved numbers under the clean
and the paper selection, and one real CAL run fills its cells end to end."""

import csv
import json
import os

import pytest
from conftest import FAST_CPU_OPTS, FP32_OPTS, fake_runs, load_tool
from lastreid.clothes_table import BENCHMARKS, PUBLISHED, method_config
from lastreid.datasets import dataset_class
from lastreid.errors import InputError, MissingFileError
from lastreid.run_results import config_sha256, config_yaml_text, write_run_results
from lastreid.startup import build_cfg

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = FAST_CPU_OPTS + FP32_OPTS + ["SOLVER.IMS_PER_BATCH", "16", "DATALOADER.NUM_INSTANCE", "4"]
TINY += ["MODEL.CAL.START_EPOCH_CC", "0", "MODEL.CAL.START_EPOCH_ADV", "0"]


def test_each_column_is_a_protocol_its_test_set_declares():
    for bench in BENCHMARKS:
        assert dataset_class(bench.name).HAS_CLOTHES  # CAL trains on every benchmark
        if bench.val:
            assert not dataset_class(bench.val).has_train
        for label, test, prefix in bench.columns:
            declared = getattr(dataset_class(test), "CLOTHES_PROTOCOLS", ("general",))
            assert (prefix[:-1] if prefix else "general") in declared, (bench.name, test)
            assert label == (prefix[:-1] if prefix else "general")
        assert bench.paper_key[0] in bench.tests


def test_a_method_is_a_config_per_dataset_else_its_last_recipe_or_a_file(tmp_path):
    cal = method_config("cal", "LTCC")
    assert cal == os.path.join(REPO, "configs", "LTCC", "cal_R50.yml")
    assert method_config("bagtricks", "LTCC") == os.path.join(
        REPO, "configs", "LaST", "bagtricks_R50.yml"
    )
    mine = tmp_path / "mine.yml"
    mine.write_text("_BASE_: {}\n".format(cal))
    assert method_config(str(mine), "PRCC") == str(mine)
    with pytest.raises(InputError, match="--methods nope: neither configs/PRCC/nope_R50.yml"):
        method_config("nope", "PRCC")


def _metrics(seed, epoch, test, bonus=0.0):
    """Distinct numbers per run, epoch and test set, with the clothes protocols' keys."""
    base = 10.0 * (seed % 7) + epoch + 0.1 * len(test) + bonus
    out = {"Rank-1": base, "mAP": base / 2, "Rank-5": base + 1, "Rank-10": base + 2}
    out.update({"mINP": base / 4, "metric": 0.75 * base})
    for p in ("CC-", "SC-"):
        out.update({p + "Rank-1": base - 3, p + "mAP": base / 3})
    return out


def _fake_training(epochs, paper_best):
    """A fake_runs action leaving a finished train_net run: its config.yaml, metrics.json
    with an evaluation of DATASETS.TESTS every epoch (epoch `paper_best` the best on every
    key), results.json with the last evaluation and, when TEST.FINAL_TESTS is set, a final
    test of epoch 1's numbers (as if val had chosen epoch 1)."""

    def spawn(cmd, log_path):
        out = os.path.dirname(log_path)
        config, opts = cmd[cmd.index("--config-file") + 1], cmd[cmd.index("--resume") + 1 :]
        cfg = build_cfg(config, opts)
        seed = sum(map(ord, out))
        with open(os.path.join(out, "config.yaml"), "w") as f:
            f.write(config_yaml_text(cfg, recipe_sha256=config_sha256(cfg)))
        tests = list(cfg.DATASETS.TESTS)
        history = {}
        with open(os.path.join(out, "metrics.json"), "w") as f:
            for epoch in range(1, epochs + 1):
                bonus = 50.0 if epoch == paper_best else 0.0
                found = {t: _metrics(seed, epoch, t, bonus) for t in tests}
                history[epoch] = found
                line = {"iteration": 2 * epoch - 1}
                if len(tests) == 1:
                    line.update(found[tests[0]])
                else:
                    line.update({f"{t}/{k}": v for t in tests for k, v in found[t].items()})
                f.write(json.dumps(line) + "\n")
        final = None
        if cfg.TEST.FINAL_TESTS:
            names = list(cfg.TEST.FINAL_TESTS)
            final = {"epoch": 1, "datasets": {t: _metrics(seed, 1, t) for t in names}}
        evaluation = {"epoch": epochs, "datasets": history[epochs]}
        write_run_results(cfg, evaluation, final, iterations_per_epoch=2)
        with open(os.path.join(out, "last_checkpoint"), "w") as f:
            f.write("model_final.pth")
        open(os.path.join(out, "model_final.pth"), "wb").close()
        return 0

    return spawn


def _csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_every_cell_is_its_runs_saved_numbers_under_both_protocols(tmp_path, monkeypatch):
    spawned = fake_runs(monkeypatch, _fake_training(epochs=3, paper_best=2))
    argv = ["--protocol", "both", "--output", str(tmp_path), "--no-print-table"]
    assert load_tool("clothes_table").main(argv + ["MODEL.BACKBONE.PRETRAIN", "False"]) == 0
    assert len(spawned) == 2 * len(BENCHMARKS) * 2
    rows = _csv(tmp_path / "clothes_table.csv")
    columns = sum(len(b.columns) for b in BENCHMARKS)
    assert len(rows) == 2 * columns * 2
    for row in rows:
        bench = next(b for b in BENCHMARKS if b.name == row["dataset"])
        method = {"BoT": "bagtricks", "CAL": "cal"}[row["method"]]
        paper = row["selection"] == "paper"
        out = tmp_path / "runs" / method / (bench.name + ("-paper" if paper else ""))
        seed = sum(map(ord, str(out)))
        prefix = "" if row["protocol"] == "general" else row["protocol"] + "-"
        if paper:  # the best epoch by the dataset's key: epoch 2, shifted up on every key
            expected, epoch = _metrics(seed, 2, row["test set"], 50.0), "2"
        elif bench.val:  # model_best.pth, chosen on val, then tested: the final test
            expected, epoch = _metrics(seed, 1, row["test set"]), "1"
        else:  # no val split: the evaluation after the last epoch
            expected, epoch = _metrics(seed, 3, row["test set"]), "3"
        assert float(row["R1"]) == pytest.approx(expected[prefix + "Rank-1"], abs=0.005)
        assert float(row["mAP"]) == pytest.approx(expected[prefix + "mAP"], abs=0.005)
        assert row["epoch"] == epoch, row
    table = (tmp_path / "clothes_table.md").read_text().splitlines()
    header = table[2].split(" | ")
    assert header[1:3] == ["LaST", "PRCC SC"] and header[-1] == "VCClothes CC |"
    cal = next(line for line in table if line.startswith("| CAL |"))
    cells = [cell.strip() for cell in cal.split("|")[2:-1]]
    assert len(cells) == columns and all("; " in cell and "-" not in cell for cell in cells)
    published = next(line for line in table if line.startswith("| CAL (published) |"))
    assert "73.7 / 28.8" in published and "55.2 / 55.8" in published
    assert all(f"| {row} (published) |" in "\n".join(table) for row in PUBLISHED)
    # Run again: every run is done, nothing is spawned, the table is the same.
    before = (tmp_path / "clothes_table.csv").read_text()
    assert load_tool("clothes_table").main(argv + ["MODEL.BACKBONE.PRETRAIN", "False"]) == 0
    assert len(spawned) == 2 * len(BENCHMARKS) * 2
    assert (tmp_path / "clothes_table.csv").read_text() == before


def test_the_clean_protocol_selects_on_val_where_there_is_one(tmp_path, monkeypatch):
    spawned = fake_runs(monkeypatch, _fake_training(epochs=2, paper_best=1))
    argv = ["--methods", "cal", "--datasets", "LaST", "PRCC", "--output", str(tmp_path)]
    argv += ["--no-print-table", "MODEL.BACKBONE.PRETRAIN", "False"]
    assert load_tool("clothes_table").main(argv) == 0
    last, prcc = ({k: v for k, v in zip(c, c[1:])} for c in spawned)
    assert last["DATASETS.TESTS"] == '("LaSTVal",)' and last["TEST.FINAL_TESTS"] == '("LaST",)'
    assert prcc["DATASETS.TESTS"] == '("PRCCSameClothes","PRCC",)'
    assert prcc["TEST.FINAL_TESTS"] == "()" and prcc["DATASETS.NAMES"] == '("PRCC",)'


def test_unknown_method_or_missing_imagenet_is_one_line_before_any_run(tmp_path, monkeypatch):
    spawned = fake_runs(monkeypatch, _fake_training(epochs=1, paper_best=1))
    tool = load_tool("clothes_table")
    with pytest.raises(InputError, match="--methods nope"):
        tool.main(["--methods", "nope", "--output", str(tmp_path)])
    with pytest.raises(MissingFileError, match="MODEL.BACKBONE.PRETRAIN_PATH"):
        tool.main(["--methods", "cal", "--output", str(tmp_path)])
    assert spawned == [] and not (tmp_path / "runs").exists()


def test_a_real_cal_run_fills_its_cells_and_a_changed_recipe_is_refused(
    all_datasets_root, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("FASTREID_DATASETS", str(all_datasets_root))
    tool = load_tool("clothes_table")
    argv = ["--methods", "cal", "--datasets", "LTCC", "--output", str(tmp_path)]
    opts = TINY + ["SOLVER.MAX_EPOCH", "1"]
    assert tool.main(argv + opts) == 0
    run = tmp_path / "runs" / "cal" / "LTCC"
    saved = json.loads((run / "results.json").read_text())["evaluation"]["datasets"]["LTCC"]
    rows = {r["protocol"]: r for r in _csv(tmp_path / "clothes_table.csv")}
    assert set(rows) == {"general", "CC"}
    for label, prefix in (("general", ""), ("CC", "CC-")):
        assert rows[label]["R1"] == "{:.2f}".format(saved[prefix + "Rank-1"])
        assert rows[label]["mAP"] == "{:.2f}".format(saved[prefix + "mAP"])
    logged = (run / "metrics.json").read_text()
    assert all(f'"{term}"' in logged for term in ("loss_cls", "loss_clothes", "loss_cal"))
    printed = capsys.readouterr().out
    assert "| CAL |" in printed and "| CAL (published) |" in printed
    with pytest.raises(InputError, match="another recipe"):
        tool.main(argv + TINY + ["SOLVER.MAX_EPOCH", "2"])


def test_the_transfer_table_targets_the_other_long_term_benchmarks(tmp_path, monkeypatch):
    spawned = fake_runs(monkeypatch)  # every cell "fails": only the commands are looked at
    argv = ["--preset", "synthetic", "--random-init", "--output", str(tmp_path)]
    argv += ["--datasets", "LTCC", "DeepChange", "VCClothes", "--no-print-table"]
    assert load_tool("transfer_matrix").main(argv) == 1
    runs = [{k: v for k, v in zip(c, c[1:])} for c in spawned]
    assert len(runs) == 6
    for run in runs:
        dataset = run["DATASETS.TESTS"].strip('(",)')
        assert dataset in ("LTCC", "DeepChange", "VCClothes")
        if "--eval-only" in run:
            assert run["--config-file"].endswith(os.path.join("transfer", "direct_synthetic.yml"))
        else:
            expected = os.path.join(dataset, "bagtricks_R50_finetune_synthetic.yml")
            assert run["--config-file"].endswith(expected)
            assert not build_cfg(run["--config-file"]).INPUT.FLIP.ENABLED
    header = (tmp_path / "transfer_table.md").read_text().splitlines()[2]
    assert "| LTCC direct | DeepChange direct | VC-Clothes direct |" in header
