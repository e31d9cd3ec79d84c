"""The paper's whole transfer table: fastreid's Market1501 / DukeMTMC / MSMT17 as pre-training
sources (layout checks, sorted lists, their BoT configs), INPUT.INTERPOLATION, and
tools/transfer_matrix.py --train / --protocol paper on tiny synthetic trees."""

import csv
import json
import os
import shutil
from types import SimpleNamespace

from lastreid.datasets import DatasetLayoutError, build_dataset, check_layout, synthetic
from lastreid.datasets.check import check_dataset
from lastreid.engine import Trainer, default_setup
from lastreid.experiments import runs
from lastreid.experiments.folder import best_epoch
from lastreid.experiments.table import csv_text
from lastreid.features import FeatureExtractor
from lastreid.startup import build_cfg
from lastreid.transfer.matrix import TransferMatrix
from lastreid.transfer.report import Cell, columns, csv_rows, format_markdown
from lastreid.transfer.sources import CONFIGS, Source, trained_sources
from lastreid.transforms import _resizing

import pytest
import torch
from conftest import fake_runs
from fastreid.data.datasets import DATASET_REGISTRY
from torchvision.transforms import InterpolationMode

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ("Market1501", "DukeMTMC", "MSMT17")
# Batches of 2 identities x 4 images: 5 iterations per epoch on the trees below.
SMALL_OPTS = ["SOLVER.IMS_PER_BATCH", "8", "SOLVER.STEPS", "[]"]


@pytest.fixture(scope="module")
def source_root(all_datasets_root):
    return all_datasets_root


# Datasets ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", SOURCES)
def test_source_dataset_is_fastreids_own_class_sorted(source_root, name):
    data = build_dataset(name, root=str(source_root))
    assert type(data) is DATASET_REGISTRY.get(name)  # not a fork
    for items in (data.train, data.query, data.gallery):
        assert items and [p for p, _, _ in items] == sorted(p for p, _, _ in items)
    own = DATASET_REGISTRY.get(name)(root=str(source_root))  # fastreid's own listing
    assert sorted(own.train) == data.train and sorted(own.gallery) == data.gallery
    counts = synthetic.read_counts(str(source_root))[name.lower()]
    assert len(data.train) == counts["train"]["images"]
    assert len(data.gallery) == counts["gallery"]["images"]  # Market: junk left out
    report = check_dataset(name, str(source_root), decode=False, progress=False)
    assert report.problems(strict=True) == 0, report.format(strict=True)


def _copy_tree(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_source_layout_problems_are_one_line_errors(source_root, tmp_path):
    with pytest.raises(DatasetLayoutError, match="folder not found: .*Market-1501-v15.09.15"):
        check_layout("Market1501", str(tmp_path))
    with pytest.raises(DatasetLayoutError, match="folder not found: .*MSMT17_V1"):
        build_dataset("MSMT17", root=str(tmp_path))  # fastreid: a bare assert
    market = _copy_tree(source_root / "Market-1501-v15.09.15", tmp_path / "Market-1501-v15.09.15")
    (market / "query" / "0001_x1.jpg").write_bytes(b"")
    with pytest.raises(DatasetLayoutError) as err:
        build_dataset("Market1501", root=str(tmp_path))
    assert "0001_x1.jpg" in str(err.value) and "\n" not in str(err.value)
    report = check_dataset("Market1501", str(tmp_path), decode=False, progress=False)
    assert [os.path.basename(p) for p, _ in report.bad_names] == ["0001_x1.jpg"]

    msmt = _copy_tree(source_root / "MSMT17_V1", tmp_path / "MSMT17_V1")
    with open(msmt / "list_gallery.txt", "a") as f:
        f.write("0000/0000_009_02_0303noon_0001_0.jpg 0\n")  # listed, not on disk
    with pytest.raises(DatasetLayoutError, match="listed in list_gallery.txt but missing"):
        check_layout("MSMT17", str(tmp_path))
    (msmt / "list_val.txt").unlink()
    with pytest.raises(DatasetLayoutError, match="list file not found: .*list_val.txt"):
        check_layout("MSMT17", str(tmp_path))
    # fastreid's name pattern is searched in the whole path: a root like this would be misread.
    odd = tmp_path / "run12_c3"
    _copy_tree(source_root / "DukeMTMC-reID", odd / "DukeMTMC-reID")
    with pytest.raises(DatasetLayoutError, match="would read as the person id"):
        check_layout("DukeMTMC", str(odd))
    assert check_layout("PRCC", str(source_root)) is True


# Market1501's config trains (and evaluates on its test split) in the transfer-matrix test.
@pytest.mark.parametrize("name", ("DukeMTMC", "MSMT17"))
def test_source_config_trains_and_evaluates(
    source_root, fast_cpu_opts, tmp_path, monkeypatch, name
):
    monkeypatch.setenv("FASTREID_DATASETS", str(source_root))
    config = os.path.join(REPO, "configs", name, "bagtricks_R50.yml")
    float32 = ["MODEL.CPU_BF16", "off"]  # the loss comparison below is not bf16 rounding
    opts = SMALL_OPTS + float32 + ["SOLVER.MAX_EPOCH", "3", "OUTPUT_DIR", str(tmp_path)]
    cfg = build_cfg(config, fast_cpu_opts + opts)
    assert cfg.DATASETS.NAMES == (name,) and cfg.MODEL.BACKBONE.DEPTH == "18x"
    default_setup(cfg, SimpleNamespace(eval_only=False, config_file=config))
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    results = trainer.train()
    assert {"Rank-1", "mAP"} <= set(results) and os.path.isfile(tmp_path / "model_final.pth")
    # It learns: the training loss falls from epoch to epoch (seeded, float32). Strictly, no
    # margin: a seeded run is deterministic, and the falls were tenths of the loss when this
    # was written. Five test persons rank too well at random for the test metrics to show it.
    with open(tmp_path / "metrics.json") as f:
        losses = [line["total_loss"] for line in map(json.loads, f) if "total_loss" in line]
    assert len(losses) == 3 and losses[2] < losses[1] < losses[0], losses


def test_source_configs_warm_up_ten_epochs_of_their_train_split():
    sizes = {"Market1501": 12936, "DukeMTMC": 16522, "MSMT17": 30248, "LaST": 71248}
    for name, images in sizes.items():
        cfg = build_cfg(
            os.path.join(REPO, "configs", name, "bagtricks_R50.yml"),
            ["MODEL.BACKBONE.PRETRAIN", "False"],
        )
        assert cfg.SOLVER.WARMUP_ITERS == 10 * (images // cfg.SOLVER.IMS_PER_BATCH), name
        assert list(cfg.SOLVER.STEPS) == [30, 70] and cfg.SOLVER.MAX_EPOCH == 120


# INPUT.INTERPOLATION ------------------------------------------------------------------------


def _modes(transform):
    return {r.interpolation for r in _resizing(transform)}


def test_interpolation_reaches_train_and_test_transforms(source_root, fast_cpu_opts, monkeypatch):
    monkeypatch.setenv("FASTREID_DATASETS", str(source_root))
    config = os.path.join(REPO, "configs", "PRCC", "bagtricks_R50_finetune.yml")
    for value, mode in (
        ("bicubic", InterpolationMode.BICUBIC),
        ("bilinear", InterpolationMode.BILINEAR),
    ):
        extra = [] if value == "bicubic" else ["INPUT.INTERPOLATION", value]  # default: fastreid's
        # The small PRCC tree has 5 training identities: 4 a step.
        cfg = build_cfg(config, fast_cpu_opts + ["SOLVER.IMS_PER_BATCH", "16"] + extra)
        train = Trainer.build_train_loader(cfg).dataset.transform
        test = Trainer.build_test_loader(cfg, "PRCC")[0].dataset.transform
        tool = FeatureExtractor(cfg, progress=False).transform
        assert _modes(train) == _modes(test) == _modes(tool) == {mode}
    # The resize itself follows: a bilinear and a bicubic test image differ.
    from PIL import Image

    image = Image.open(build_dataset("PRCC", root=str(source_root)).query[0][0]).convert("RGB")
    bilinear = Trainer.build_test_loader(cfg, "PRCC")[0].dataset.transform(image)
    plain = build_cfg(config, fast_cpu_opts)
    bicubic = Trainer.build_test_loader(plain, "PRCC")[0].dataset.transform(image)
    assert bilinear.shape == bicubic.shape and not torch.equal(bilinear, bicubic)
    with pytest.raises(ValueError, match="^INPUT.INTERPOLATION is 'nearest': expected one of"):
        build_cfg(config, fast_cpu_opts + ["INPUT.INTERPOLATION", "nearest"])


# The whole table ----------------------------------------------------------------------------


def test_transfer_matrix_trains_sources_builds_the_table_and_resumes(
    source_root, fast_cpu_opts, tmp_path, monkeypatch, capsys
):
    """--train Market1501 --protocol paper, fine-tuned on PRCC: a trained row; interrupted
    (deterministically, before its cell's run) and resumed by the same command; the paper
    cell's best epoch checked against its history. Kept to two runs for the test budget: the
    direct cells, the ImageNet row and the LaST row's weights (model_best.pth) are checked by
    their commands in test_imagenet_row_is_the_file_itself (the clean direct cells, and a
    finished cell skipped on resuming, run in test_transfer.py; the published rows:
    test_both_protocols_in_one_table)."""
    monkeypatch.syspath_prepend(os.path.join(REPO, "tools"))
    import transfer_matrix

    monkeypatch.setenv("FASTREID_DATASETS", str(source_root))
    output = tmp_path / "table"
    # TEST.EVAL_PERIOD 2: the sources evaluate once, after their last epoch; the paper
    # protocol evaluates the fine-tunes after every epoch all the same.
    # fmt: off
    argv = [
        "--train",
        "Market1501",
        "--datasets",
        "PRCC",
        "--settings",
        "finetune",
        "--protocol",
        "paper",
        "--output",
        str(output),
        "--no-print-table",
        *fast_cpu_opts,
        *SMALL_OPTS,
        "SOLVER.MAX_EPOCH", "2",
        "TEST.EVAL_PERIOD", "2",
    ]
    # fmt: on

    real_run = runs.run_logged
    calls = []

    def interrupted(cmd, log_path, *args):
        calls.append(cmd)
        if len(calls) == 2:  # the source trained, before its cell
            raise KeyboardInterrupt
        return real_run(cmd, log_path, *args)

    monkeypatch.setattr(runs, "run_logged", interrupted)
    with pytest.raises(KeyboardInterrupt):
        transfer_matrix.main(argv)
    first = capsys.readouterr().out
    started = [line for line in first.splitlines() if ": training (log" in line]
    # the source done; the cell interrupted before its process started
    assert [" source " in line for line in started] == [True, False], first
    assert first.count(": done in ") == 1, first
    assert os.path.isfile(output / "sources" / "Market1501" / "model_final.pth")

    monkeypatch.setattr(runs, "run_logged", real_run)
    assert transfer_matrix.main(argv) == 0
    second = capsys.readouterr().out
    # the source skipped, the interrupted cell run
    assert second.count("done before, skipped") == 1, second
    started = [line for line in second.splitlines() if ": training (log" in line]
    assert len(started) == 1 and "Market1501 | PRCC | fine-tuned | paper" in started[0], second
    assert second.count(": done in ") == 1, second

    table = (output / "transfer_table.md").read_text().splitlines()
    assert table[0].startswith("Rank-1 / mAP (%); protocol paper")
    assert table[2] == "| pre-training | PRCC fine-tuned |"
    names = [line.split(" | ")[0] for line in table[4:]]
    assert names == ["| Market1501", "| Market1501 (published)"]
    assert table[5] == "| Market1501 (published) | 44.3 / 43.1 |"  # the paper's PRCC fine-tuned
    rows = list(csv.DictReader((output / "transfer_table.csv").read_text().splitlines()))
    assert [r["protocol"] for r in rows] == ["paper"]

    for row, source in zip(rows, ("Market1501",)):
        stored = json.loads(
            (output / "results" / f"{source}__PRCC__finetune__paper.json").read_text()
        )
        run = output / "runs" / source / "PRCC-finetune-paper"
        # The cell's own per-epoch history, read independently of folder.best_epoch.
        evals = [
            json.loads(line)
            for line in (run / "metrics.json").read_text().splitlines()
            if line.strip() and "Rank-1" in json.loads(line)
        ]
        assert len(evals) == 2  # the test split after each of the 2 epochs
        scores = [(r["Rank-1"] + r["mAP"]) / 2 for r in evals]
        best = max(i for i, v in enumerate(scores) if v == max(scores))  # ties: the later
        assert stored["best_epoch"] == best + 1 == int(row["PRCC fine-tuned epoch"])
        assert stored["metrics"]["Rank-1"] == pytest.approx(evals[best]["Rank-1"])
        assert stored["metrics"]["mAP"] == pytest.approx(evals[best]["mAP"])
        assert stored["last"]["mAP"] == pytest.approx(evals[-1]["mAP"])
        assert f"(ep {best + 1})" in table[names.index("| " + source) + 4]
        config = (run / "config.yaml").read_text()
        assert "INTERPOLATION: bilinear" in config and "EVAL_PERIOD: 1\n" in config
    cell = json.loads((output / "results" / "Market1501__PRCC__finetune__paper.json").read_text())
    assert cell["weights"] == str(output / "sources" / "Market1501" / "model_final.pth")


def test_imagenet_row_is_the_file_itself(tmp_path, monkeypatch):
    """--imagenet: the first row is the file (torchvision stem), and it initialises the
    trained sources (MODEL.BACKBONE.PRETRAIN_PATH)."""
    import torchvision

    imagenet = tmp_path / "resnet18-imagenet.pth"
    torch.save(torchvision.models.resnet18().state_dict(), imagenet)
    sources = trained_sources(str(tmp_path / "out"), ["MSMT17", "LaST"], str(imagenet))
    assert [s.name for s in sources] == ["ImageNet", "MSMT17", "LaST"]  # the paper's row order
    assert sources[0].path == str(imagenet) and sources[0].torchvision_stem and not sources[0].train
    assert sources[2].path == str(tmp_path / "out" / "sources" / "LaST" / "model_best.pth")
    matrix = TransferMatrix(
        str(tmp_path / "out"),
        sources,
        CONFIGS["reference"],
        imagenet=str(imagenet),
        protocol="both",
    )
    spawned = fake_runs(monkeypatch)
    matrix.runner.log = lambda line: None
    matrix.train_sources()
    assert len(spawned) == 2 and all(
        c[c.index("MODEL.BACKBONE.PRETRAIN_PATH") + 1] == str(imagenet) for c in spawned
    )
    assert all(s.error for s in sources[1:]) and not sources[0].error
    cells = [c for c in matrix.cells() if c.source.name == "ImageNet"]
    assert len(cells) == 8  # 2 datasets x 2 settings x 2 protocols
    paper_finetune = [c for c in cells if c.setting == "finetune" and c.protocol == "paper"]
    cmd = matrix.spec(paper_finetune[0]).command()
    assert cmd[cmd.index("MODEL.WEIGHTS") + 1] == str(imagenet)
    assert cmd[cmd.index("MODEL.BACKBONE.TORCHVISION_STEM") + 1] == "True"
    assert cmd[cmd.index("INPUT.INTERPOLATION") + 1] == "bilinear"
    assert cmd[cmd.index("TEST.EVAL_PERIOD") + 1] == "1"
    direct = [c for c in cells if c.setting == "direct"]
    assert {c.protocol for c in direct} == {"clean", "paper"}
    for cell in direct:
        cmd = matrix.spec(cell).command()
        assert "--eval-only" in cmd and cmd[cmd.index("MODEL.WEIGHTS") + 1] == str(imagenet)
        assert ("INPUT.INTERPOLATION" in cmd) == (cell.protocol == "paper")
        assert ("TEST.EVAL_PERIOD" in cmd) is False  # evaluated once either way


def test_paper_selection_needs_every_epoch(tmp_path):
    """best_epoch on a hand-written history: ties go to the later epoch; a gap is refused."""
    (tmp_path / "config.yaml").write_text("SOLVER:\n  MAX_EPOCH: 3\nTEST:\n  EVAL_PERIOD: 1\n")
    lines = [
        {"iteration": 4, "Rank-1": 40.0, "mAP": 20.0, "total_loss": 3.0},
        {"iteration": 9, "Rank-1": 50.0, "mAP": 30.0},
        {"iteration": 14, "Rank-1": 60.0, "mAP": 20.0},
    ]
    (tmp_path / "metrics.json").write_text("".join(json.dumps(r) + "\n" for r in lines))
    chosen = best_epoch(str(tmp_path), "PRCC")
    assert chosen["best_epoch"] == 3 and chosen["metrics"]["Rank-1"] == 60.0
    assert [h["epoch"] for h in chosen["history"]] == [1, 2, 3]
    (tmp_path / "metrics.json").write_text("".join(json.dumps(r) + "\n" for r in lines[:2]))
    assert best_epoch(str(tmp_path), "PRCC") is None


def test_both_protocols_in_one_table():
    rows, cols = ["LaST"], columns(("PRCC",), ("finetune",))

    def cell(protocol, r1, m_ap, epoch=None):
        result = {"metrics": {"Rank-1": r1, "mAP": m_ap}}
        if epoch:
            result["best_epoch"] = epoch
        return Cell(Source("LaST"), "PRCC", "finetune", result=result, protocol=protocol)

    grid = {
        ("LaST", "PRCC", "finetune", "clean"): cell("clean", 50.0, 40.0),
        ("LaST", "PRCC", "finetune", "paper"): cell("paper", 55.0, 44.0, epoch=37),
    }
    md = format_markdown(rows, cols, grid, "both").splitlines()
    assert md[0].startswith("Rank-1 / mAP (%); protocol both")
    assert "; paper (best" in md[0] and "seed" not in md[0]  # the protocol's name
    assert md[-2:] == [
        "| LaST | 50.0 / 40.0; 55.0 / 44.0 (ep 37) |",
        "| LaST (published) | 54.4 / 54.3 |",
    ]
    table = list(csv.reader(csv_text(csv_rows(rows, cols, grid, "both")).splitlines()))
    assert table[0] == [
        "pre-training",
        "PRCC fine-tuned R1",
        "PRCC fine-tuned mAP",
        "PRCC fine-tuned config",
        "PRCC fine-tuned paper R1",
        "PRCC fine-tuned paper mAP",
        "PRCC fine-tuned paper epoch",
        "PRCC fine-tuned paper config",
        "protocol",
    ]
    assert table[1] == ["LaST", "50.00", "40.00", "", "55.00", "44.00", "37", "", "both"]
