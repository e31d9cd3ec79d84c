"""The generalisation experiments: PRCC's single-shot protocol, the reference max-pool
switch, fine-tuning from a LaST checkpoint, and tools/transfer_matrix.py on synthetic data."""

import csv
import json
import os
import sys
from collections import OrderedDict
from types import SimpleNamespace

from lastreid.atomic import save_atomic
from lastreid.checkpoint import (
    CLASSIFIER_NOT_LOADED,
    LAYOUT_FASTREID,
    LAYOUT_REFERENCE,
    backbone_loaded,
    has_torchvision_stem,
)
from lastreid.errors import InputError, run_tool
from lastreid.evaluation import BlockedReidEvaluator
from lastreid.evaluation.single_shot import (
    SingleShotReidEvaluator,
    single_shot_draws,
    single_shot_metrics,
)
from lastreid.experiments.folder import weights_signature
from lastreid.experiments.runs import recipe_sha256
from lastreid.experiments.table import csv_text
from lastreid.run_results import RECIPE_LINE, read_run_results, run_config_sha256
from lastreid.startup import build_cfg
from lastreid.transfer.matrix import TransferMatrix
from lastreid.transfer.report import CHART_SIZE, Cell, columns, csv_rows, format_markdown
from lastreid.transfer.sources import CONFIGS, Source

import numpy as np
import pytest
import torch
from conftest import fake_runs, load_tool

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIRECT = os.path.join(REPO, "configs", "transfer", "direct.yml")
PRCC_FINETUNE = os.path.join(REPO, "configs", "PRCC", "bagtricks_R50_finetune.yml")
# Batches of 2 identities x 4 images: a few iterations per epoch on the small trees below.
SMALL_OPTS = ["SOLVER.IMS_PER_BATCH", "8", "SOLVER.MAX_EPOCH", "1", "SOLVER.STEPS", "[]"]


@pytest.fixture(scope="module")
def small_root(module_tmp):
    """Synthetic PRCC (5 train ids x 3 cameras x 3 images; 5 test ids, 15 query / 15
    gallery images) and Celeb-reID (5 train ids x 8 images; 5 query, 15 gallery images):
    5 training iterations of 8 images per epoch (fastreid's metric printer divides by zero
    with fewer) and galleries of at least 10 (Rank-10)."""
    from lastreid.datasets import synthetic

    root = module_tmp.mktemp("datasets_small")
    synthetic.write_all(
        str(root),
        preset="tiny",
        seed=0,
        datasets=("prcc", "celebreid"),
        test_ids=5,
        images_per_camera=3,
        train_images=8,
    )
    return root


# Single-shot protocol ---------------------------------------------------------------------


def _hand_made():
    """3 queries and 12 gallery images of 6 identities (pid 2 has one gallery image, pids
    3-5 are gallery-only), 4-D features; query 2 shares a camera with its only match."""
    rng = np.random.default_rng(3)
    q_pids, g_pids = np.array([0, 1, 2]), np.array([0, 0, 1, 1, 1, 2, 0, 3, 3, 4, 5, 5])
    q_camids, g_camids = np.array([2, 2, 5]), np.array([0, 0, 0, 1, 0, 5, 1, 0, 1, 0, 0, 1])
    qf = rng.normal(size=(3, 4)).astype(np.float32)
    gf = rng.normal(size=(12, 4)).astype(np.float32)
    gf[0] = qf[0] + 0.05  # a close match for query 0; its other images are random
    return qf, gf, q_pids, g_pids, q_camids, g_camids


def _direct_single_shot(qf, gf, q_pids, g_pids, q_camids, g_camids, draws):
    """Plain loops: cosine distance, sort, drop same pid + camid, 1 / rank of the match."""
    r1, ap = [], []
    qn = qf / np.linalg.norm(qf, axis=1, keepdims=True)
    gn = gf / np.linalg.norm(gf, axis=1, keepdims=True)
    for sel in draws:
        hits, precisions = [], []
        for i in range(len(qf)):
            order = sorted(sel, key=lambda j: (1 - float(qn[i] @ gn[j]), j))
            kept = [j for j in order if not (g_pids[j] == q_pids[i] and g_camids[j] == q_camids[i])]
            ranks = [r for r, j in enumerate(kept, 1) if g_pids[j] == q_pids[i]]
            if not ranks:
                continue  # no match left: the query does not count
            hits.append(ranks[0] == 1)
            precisions.append(np.mean([(k + 1) / r for k, r in enumerate(ranks)]))
        r1.append(np.mean(hits))
        ap.append(np.mean(precisions))
    return float(np.mean(r1)), float(np.mean(ap))


def test_single_shot_draws_one_image_per_identity():
    g_pids = np.array([4, 1, 4, 4, 9, 1])  # pid 4: images 0, 2 and 3
    draws = single_shot_draws(g_pids, trials=50, seed=7)
    assert len(draws) == 50
    for sel in draws:
        assert g_pids[sel].tolist() == [1, 4, 9]
    assert {int(s[1]) for s in draws} == {0, 2, 3}  # every image of pid 4 gets drawn
    again = single_shot_draws(g_pids, trials=50, seed=7)
    assert all((a == b).all() for a, b in zip(draws, again))


def test_single_shot_metrics_match_a_direct_computation():
    qf, gf, q_pids, g_pids, q_camids, g_camids = _hand_made()
    draws = single_shot_draws(g_pids, trials=6, seed=1)
    expected_r1, expected_map = _direct_single_shot(
        qf, gf, q_pids, g_pids, q_camids, g_camids, draws
    )
    got = single_shot_metrics(
        torch.from_numpy(qf),
        torch.from_numpy(gf),
        q_pids,
        g_pids,
        q_camids,
        g_camids,
        trials=6,
        seed=1,
    )
    assert got["Rank-1"] == pytest.approx(expected_r1, abs=1e-6)
    assert got["mAP"] == pytest.approx(expected_map, abs=1e-6)
    assert got["trials"] == 6
    # Query 2's only gallery image shares its camera: it never counts.
    without = single_shot_metrics(
        qf[:2], gf, q_pids[:2], g_pids, q_camids[:2], g_camids, trials=6, seed=1
    )
    assert without["Rank-1"] == pytest.approx(got["Rank-1"]) and without["mAP"] == pytest.approx(
        got["mAP"]
    )


def test_single_shot_evaluator_adds_ss_keys_beside_the_full_gallery(tmp_path):
    qf, gf, q_pids, g_pids, q_camids, g_camids = _hand_made()
    # fmt: off
    cfg = build_cfg(
        DIRECT,
        [
            "MODEL.DEVICE", "cpu",
            "TEST.SINGLE_SHOT.ENABLED", "True",
            "TEST.SINGLE_SHOT.TRIALS", "6",
            "TEST.SINGLE_SHOT.SEED", "1",
        ],
        eval_only=False,
    )
    # fmt: on
    feats = np.concatenate([qf, gf])
    pids, camids = np.concatenate([q_pids, g_pids]), np.concatenate([q_camids, g_camids])
    results = []
    for cls in (SingleShotReidEvaluator, BlockedReidEvaluator):
        evaluator = cls(cfg, num_query=3, num_items=15)
        for s in (0, 6, 12):  # three batches
            evaluator.process(
                {
                    "targets": torch.from_numpy(pids[s : s + 6]),
                    "camids": torch.from_numpy(camids[s : s + 6]),
                },
                torch.from_numpy(feats[s : s + 6]),
            )
        results.append(evaluator.evaluate())
    single, full = results
    assert {k: v for k, v in single.items() if not k.startswith("SS-")} == full
    draws = single_shot_draws(g_pids, trials=6, seed=1)
    r1, m_ap = _direct_single_shot(qf, gf, q_pids, g_pids, q_camids, g_camids, draws)
    assert single["SS-Rank-1"] == pytest.approx(100 * r1, abs=1e-4)
    assert single["SS-mAP"] == pytest.approx(100 * m_ap, abs=1e-4)
    assert {"SS-Rank-5", "SS-Rank-10", "SS-mINP"} <= set(single)


def test_trainer_chooses_the_single_shot_evaluator(small_root, fast_cpu_opts, monkeypatch):
    from lastreid.engine import Trainer

    monkeypatch.setenv("FASTREID_DATASETS", str(small_root))
    for on, cls in (("True", SingleShotReidEvaluator), ("False", BlockedReidEvaluator)):
        cfg = build_cfg(DIRECT, fast_cpu_opts + ["TEST.SINGLE_SHOT.ENABLED", on])
        _, evaluator = Trainer.build_evaluator(cfg, "PRCC")
        assert type(evaluator) is cls


# Reference max-pool -------------------------------------------------------------------------


def test_torchvision_stem_switch_gives_the_reference_maxpool(fast_cpu_opts):
    from lastreid.engine import Trainer

    for value, expected in (("True", True), ("False", False)):
        cfg = build_cfg(DIRECT, fast_cpu_opts + ["MODEL.BACKBONE.TORCHVISION_STEM", value])
        model = Trainer.build_model(cfg)
        assert has_torchvision_stem(model) is expected
        out = model.eval()(torch.zeros(2, 3, 64, 32))
        assert out.shape == (2, 512)
    # the default stays fastreid's: our own BoT checkpoints were trained with it
    assert (
        build_cfg(
            os.path.join(REPO, "configs", "LaST", "bagtricks_R50.yml"),
            ["MODEL.BACKBONE.PRETRAIN", "False"],
        ).MODEL.BACKBONE.TORCHVISION_STEM
        is False
    )


# Fine-tuning from a LaST checkpoint ---------------------------------------------------------

_TO_REFERENCE = (
    ("backbone.conv1.", "base.0."),
    ("backbone.bn1.", "base.1."),
    ("backbone.layer", "layer"),
    ("heads.bottleneck.0.", "bottleneck."),
)


def write_reference_checkpoint(path, opts, num_classes=72, seed=1):
    """A public-LaST-code style file ({'state_dict': ...}, DataParallel's `module.` prefix,
    a 72-class classifier) of the architecture `opts` describe, with random weights."""
    from lastreid.engine import Trainer

    cfg = build_cfg(DIRECT, opts + ["MODEL.HEADS.NUM_CLASSES", str(num_classes)])
    torch.manual_seed(seed)
    model = Trainer.build_model(cfg)
    state = OrderedDict()
    for key, value in model.state_dict().items():
        if key == "heads.weight":
            key = "classifier.weight"
        for old, new in _TO_REFERENCE:
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        state["module." + key] = value.detach().clone().contiguous()
    save_atomic({"state_dict": state, "epoch": 120}, path)
    return state


@pytest.fixture(scope="module")
def last_checkpoint(module_tmp):
    from conftest import FAST_CPU_OPTS

    folder = module_tmp.mktemp("pre_feat")
    path = folder / "LaST.pth"
    state = write_reference_checkpoint(str(path), FAST_CPU_OPTS)
    return SimpleNamespace(folder=folder, path=path, state=state)


def test_finetune_from_a_last_checkpoint_on_prcc(
    small_root, fast_cpu_opts, last_checkpoint, tmp_path, monkeypatch
):
    from lastreid.engine import Trainer

    monkeypatch.setenv("FASTREID_DATASETS", str(small_root))
    float32 = ["MODEL.CPU_BF16", "off"]  # the comparison below is not bf16 rounding
    weights = ["MODEL.WEIGHTS", str(last_checkpoint.path), "OUTPUT_DIR", str(tmp_path)]
    cfg = build_cfg(PRCC_FINETUNE, fast_cpu_opts + SMALL_OPTS + float32 + weights)
    assert cfg.MODEL.LOSSES.NAME == ("CrossEntropyLoss",) and cfg.SOLVER.OPT == "SGD"
    assert not cfg.MODEL.LOAD_CLASSIFIER and not cfg.INPUT.FLIP.ENABLED
    trainer = Trainer(cfg)
    trainer.resume_or_load(resume=False)
    report = trainer.checkpointer.last_load_report
    assert report.reasons["heads.weight"] == CLASSIFIER_NOT_LOADED
    assert CLASSIFIER_NOT_LOADED in report.summary()
    assert backbone_loaded(report) and "heads.bottleneck.0.weight" in report.loaded
    model = trainer.model
    assert torch.equal(model.backbone.conv1.weight, last_checkpoint.state["module.base.0.weight"])
    assert model.heads.weight.shape[0] == 5  # the synthetic PRCC's training identities
    assert has_torchvision_stem(model)  # the reference config's stem
    direct = Trainer.test(cfg, model)  # the checkpoint as it is: the direct cell
    results = trainer.train()
    assert trainer.iter == trainer.iters_per_epoch > 0
    # One seeded float32 epoch of fine-tuning helps: strictly above, no margin needed (the
    # random reference checkpoint knows nothing of PRCC; when written the gain was several
    # points of mAP).
    assert results["mAP"] > direct["mAP"]


# The matrix runner -----------------------------------------------------------------------------


def _fake_cell(source, dataset, setting, r1, m_ap):
    return Cell(Source(source), dataset, setting, result={"metrics": {"Rank-1": r1, "mAP": m_ap}})


def test_table_has_the_papers_shape_with_its_numbers_beneath_ours():
    rows = ["random init", "ImageNet", "LaST"]
    cols = columns()
    ours = {"random init": (1.0, 2.0), "ImageNet": (10.0, 5.0), "LaST": (40.0, 30.0)}
    grid = {(n, d, s, "clean"): _fake_cell(n, d, s, *ours[n]) for n in rows for d, s in cols}
    for n in rows:
        grid[(n, "PRCC", "direct", "clean")].result["config_sha256"] = "ab" * 32
    md = format_markdown(rows, cols, grid).splitlines()
    assert (
        md[2]
        == "| pre-training | PRCC direct | Celeb direct | PRCC fine-tuned | Celeb fine-tuned |"
    )
    # Each of our rows, then the paper's row of the same pre-training, where it has one.
    assert md[4:] == [
        "| random init | 1.0 / 2.0 | 1.0 / 2.0 | 1.0 / 2.0 | 1.0 / 2.0 |",
        "| ImageNet | 10.0 / 5.0 | 10.0 / 5.0 | 10.0 / 5.0 | 10.0 / 5.0 |",
        "| ImageNet (published) | 24.7 / 13.5 | 28.7 / 3.0 | 43.1 / 41.3 | 49.2 / 8.7 |",
        "| LaST | 40.0 / 30.0 | 40.0 / 30.0 | 40.0 / 30.0 | 40.0 / 30.0 |",
        "| LaST (published) | 39.3 / 32.6 | 47.0 / 7.0 | 54.4 / 54.3 | 56.1 / 11.7 |",
    ]
    del grid[("LaST", "PRCC", "finetune", "clean")]
    assert format_markdown(rows, cols, grid).splitlines()[-2].count(" - ") == 1
    table = list(csv.reader(csv_text(csv_rows(rows, cols, grid)).splitlines()))
    assert table[0][:4] == [
        "pre-training",
        "PRCC direct R1",
        "PRCC direct mAP",
        "PRCC direct config",
    ]
    assert len(table[0]) == 1 + 4 * 3 + 1  # R1, mAP, config per column; protocol
    assert table[0][-1] == "protocol" and table[1][-1] == "clean"
    assert table[3][7] == "" and table[2][1] == "10.00"  # LaST's missing PRCC fine-tuned
    assert table[1][3] == "ab" * 6 and table[1][6] == ""  # a cell without a hash: empty


def test_a_cell_run_is_trained_resumed_or_evaluated_again(tmp_path, monkeypatch):
    src = Source("LaST", "/x/LaST.pth", LAYOUT_REFERENCE)
    matrix = TransferMatrix(str(tmp_path), [src], CONFIGS["reference"])
    lines = []
    matrix.runner.log = lines.append
    spec = matrix.spec(Cell(src, "PRCC", "finetune"))
    cmd = spec.command()
    assert "--resume" in cmd and "--eval-only" not in cmd
    assert cmd[cmd.index("MODEL.BACKBONE.TORCHVISION_STEM") + 1] == "True"
    assert "--eval-only" in matrix.spec(Cell(src, "PRCC", "direct")).command()
    spawned = fake_runs(monkeypatch)
    assert matrix.runner.execute(spec) is None and spawned == [cmd]
    os.makedirs(spec.output, exist_ok=True)
    with open(os.path.join(spec.output, "last_checkpoint"), "w") as f:
        f.write("model_0001.pth")
    matrix.runner.execute(spec)
    with open(os.path.join(spec.output, "last_checkpoint"), "w") as f:
        f.write("model_final.pth")
    open(os.path.join(spec.output, "model_final.pth"), "wb").close()
    matrix.runner.execute(spec)  # resumed too: train_net evaluates its final weights
    started = [line.split(": ")[1].split(" (")[0] for line in lines if "(log " in line]
    assert started == ["training", "resuming", "evaluating"] and spawned == [cmd] * 3


def test_a_changed_source_checkpoint_redoes_its_cells(tmp_path, monkeypatch):
    weights = tmp_path / "LaST.pth"
    weights.write_bytes(b"v1")
    src = Source("LaST", str(weights), LAYOUT_FASTREID)
    matrix = TransferMatrix(
        str(tmp_path / "out"),
        [src],
        CONFIGS["synthetic"],
        datasets=("PRCC",),
        settings=("finetune",),
    )
    lines = []
    matrix.runner.log = lines.append
    spawned = fake_runs(monkeypatch)
    cell = matrix.cells()[0]
    os.makedirs(os.path.join(matrix.output, "results"))
    stored = {
        "metrics": {"Rank-1": 50.0, "mAP": 40.0},
        "opts": [],
        "weights_signature": weights_signature(str(weights)),
    }
    with open(matrix.result_path(cell), "w") as f:
        json.dump(stored, f)
    matrix._run_cell(cell, "1/1")
    assert not spawned and cell.result["metrics"]["Rank-1"] == 50.0  # finished: skipped
    os.makedirs(matrix.cell_dir(cell), exist_ok=True)
    with open(os.path.join(matrix.cell_dir(cell), "source.json"), "w") as f:
        json.dump(matrix.spec(cell).stamp, f)
    with open(os.path.join(matrix.cell_dir(cell), "last_checkpoint"), "w") as f:
        f.write("model_0001.pth")  # an unfinished fine-tune of the old weights
    weights.write_bytes(b"version 2")  # retrained
    cell = matrix.cells()[0]
    matrix._run_cell(cell, "1/1")
    assert len(spawned) == 1 and "--resume" in spawned[0] and cell.result is None
    assert any("changed" in line for line in lines)
    assert not os.path.exists(os.path.join(matrix.cell_dir(cell), "last_checkpoint"))  # anew


def test_a_cell_of_another_recipe_stops_the_command_or_is_redone(tmp_path):
    weights = tmp_path / "LaST.pth"
    weights.write_bytes(b"v1")
    src = Source("LaST", str(weights), LAYOUT_FASTREID)
    matrix = TransferMatrix(
        str(tmp_path / "out"),
        [src],
        CONFIGS["synthetic"],
        datasets=("PRCC", "CelebReID"),
        settings=("finetune",),
    )
    matrix.runner.log = lambda line: None
    prcc, celeb = matrix.cells()
    os.makedirs(os.path.join(matrix.output, "results"))
    for cell, recipe in ((prcc, "0" * 64), (celeb, recipe_sha256(matrix.spec(celeb)))):
        with open(matrix.result_path(cell), "w") as f:
            json.dump({"metrics": {"Rank-1": 50.0, "mAP": 40.0}}, f)
        os.makedirs(matrix.cell_dir(cell))
        with open(os.path.join(matrix.cell_dir(cell), "config.yaml"), "w") as f:
            f.write(RECIPE_LINE.format(recipe) + "\n")  # the recipe the run started with

    def settle(policy):
        matrix.runner.stale = policy
        return matrix.runner.settle(matrix.stale_candidates(), matrix.output)

    with pytest.raises(InputError, match=r"1 run\(s\) .*LaST \| PRCC \| fine-tuned.*--stale"):
        settle("stop")
    assert os.path.isfile(matrix.result_path(prcc))  # stop touches nothing
    # reuse keeps finished runs (test_transfer_matrix_writes_...); resuming this started one
    # with the command's recipe would mix two
    with pytest.raises(InputError, match=r"--stale reuse keeps finished runs only; .*PRCC"):
        settle("reuse")
    assert os.path.isfile(matrix.result_path(prcc))
    settle("redo")
    assert not os.path.exists(matrix.result_path(prcc))
    assert not os.path.exists(matrix.cell_dir(prcc))
    assert os.path.isfile(matrix.result_path(celeb))  # its own recipe: kept
    assert settle("stop") == []


def test_transfer_matrix_writes_the_table_and_skips_finished_cells(
    small_root, fast_cpu_opts, last_checkpoint, tmp_path, monkeypatch, capsys
):
    """The tool's main in this process (its cells are train_net processes all the same), four
    times: the table, the same command again, another recipe stopped, then kept on purpose.
    (tools/run_demo.py --smoke runs the tool as a process of its own: test_demo.)"""
    from PIL import Image

    tool = load_tool("transfer_matrix")
    output = tmp_path / "transfer"
    monkeypatch.setenv("FASTREID_DATASETS", str(small_root))  # the cells' processes inherit it
    monkeypatch.setattr(sys, "argv", [os.path.join(REPO, "tools", "transfer_matrix.py")])
    argv = [
        "--preset",
        "synthetic",
        "--models",
        str(last_checkpoint.folder),
        "--single-shot",
        "--output",
        str(output),
        *fast_cpu_opts,
        *SMALL_OPTS,
    ]

    def run(args):
        """run_tool(main) as `python tools/transfer_matrix.py args` runs it: (status, out, err)."""
        with pytest.raises(SystemExit) as end:
            run_tool(tool.main, args)
        printed = capsys.readouterr()
        return end.value.code, printed.out, printed.err

    code, out, err = run(argv)
    assert code == 0, out[-3000:] + err[-3000:]
    assert "source 'LaST'" in out and "reference layout" in out

    table = (output / "transfer_table.md").read_text().splitlines()
    assert (
        table[2]
        == "| pre-training | PRCC direct | Celeb direct | PRCC fine-tuned | Celeb fine-tuned |"
    )
    # The reference LaST file's row is followed by the paper's LaST row. (One row: the
    # random-init row runs in tools/run_demo.py --smoke's table, test_demo.)
    names = [line.split(" | ")[0] for line in table[4:]]
    assert names == ["| LaST", "| LaST (published)"]
    assert table[4].count(" / ") == 4 and " - " not in table[4]
    rows = list(csv.DictReader((output / "transfer_table.csv").read_text().splitlines()))
    assert [r["pre-training"] for r in rows] == ["LaST"]
    assert all(
        0 <= float(v) <= 100
        for r in rows
        for k, v in r.items()
        if k not in ("pre-training", "protocol") and not k.endswith(" config")
    )
    assert table[0].startswith("Rank-1 / mAP (%); protocol clean")
    assert {"PRCC direct SS-R1", "PRCC fine-tuned SS-mAP"} <= set(rows[0])
    assert "Celeb direct SS-R1" not in rows[0]  # --single-shot: PRCC cells only
    with Image.open(output / "transfer_chart.png") as image:
        image.load()
        assert image.size == CHART_SIZE
    stored = json.loads((output / "results" / "LaST__PRCC__finetune.json").read_text())
    assert stored["layout"] == "reference" and stored["torchvision_stem"] is True
    assert stored["metrics"]["Rank-1"] == pytest.approx(
        float(rows[0]["PRCC fine-tuned R1"]), abs=0.01
    )
    # The cell's recipe: the merged config its run started with, carried into the CSV.
    cell_run = output / "runs" / "LaST" / "PRCC-finetune"
    assert stored["config_sha256"] == run_config_sha256(str(cell_run))
    assert stored["config_sha256"] == read_run_results(str(cell_run))["config_sha256"]
    assert rows[0]["PRCC fine-tuned config"] == stored["config_sha256"][:12]
    assert out.count(": done in ") == 4

    code, out, err = run(argv)
    assert code == 0, out[-3000:] + err[-3000:]
    assert out.count("done before, skipped") == 4 and ": done in " not in out
    assert (output / "transfer_table.md").read_text().splitlines() == table

    # Another recipe (one more override) never reuses the cells silently: it stops with one
    # line naming them and touches nothing; --stale reuse keeps them on purpose.
    before = {p: p.read_bytes() for p in sorted((output / "results").iterdir())}
    changed = argv + ["TEST.IMS_PER_BATCH", "32"]
    code, out, err = run(changed)
    assert code == 1, out[-3000:] + err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith("transfer_matrix.py: error: 4 run(s) under ") and "--stale" in last
    assert "LaST | PRCC | fine-tuned" in last
    assert {p: p.read_bytes() for p in sorted((output / "results").iterdir())} == before
    code, out, err = run(["--stale", "reuse"] + changed)  # before the trailing overrides
    assert code == 0, out[-3000:] + err[-3000:]
    assert out.count("kept (--stale reuse)") == 4
    assert out.count("done before, skipped") == 4
