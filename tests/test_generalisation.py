"""The paper's other generalisation half: Market-1501 / DukeMTMC-reID as transfer targets,
LaST's clothes classes as a source (configs/LaST/clothes_R50.yml, --train LaSTClothes), and
joint training on Market-1501 (configs/Market1501/joint_*.yml, tools/joint_table.py), on
tiny synthetic trees."""

import csv
import json
import os
import re
from argparse import Namespace

from lastreid.checkpoint import CLASSIFIER_NOT_LOADED
from lastreid.datasets import synthetic
from lastreid.errors import InputError
from lastreid.joint import JOINT_RUNS
from lastreid.loaders import build_train_set
from lastreid.run_results import (
    config_sha256,
    config_yaml_text,
    read_run_results,
    write_run_results,
)
from lastreid.startup import build_cfg
from lastreid.transfer.matrix import TransferMatrix
from lastreid.transfer.report import SOURCE_CELL
from lastreid.transfer.sources import CONFIGS as TRANSFER_CONFIGS
from lastreid.transfer.sources import discover_sources, trained_sources, training_datasets

import pytest
import torch
import yaml
from conftest import fake_runs, load_tool

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(REPO, "configs")
CLOTHES = os.path.join(CONFIGS, "LaST", "clothes_R50.yml")
JOINT = {
    "LaSTClothes": os.path.join(CONFIGS, "Market1501", "joint_LaSTClothes_R50.yml"),
    "MSMT17": os.path.join(CONFIGS, "Market1501", "joint_MSMT17_R50.yml"),
}
# Batches of 2 identities x 4 images, one epoch, no decay.
SMALL_OPTS = ["SOLVER.IMS_PER_BATCH", "8", "SOLVER.MAX_EPOCH", "1", "SOLVER.STEPS", "[]"]


@pytest.fixture(scope="module")
def trees(all_datasets_root):
    return all_datasets_root


def _train_names(root, folder):
    return sorted(p.name for p in (root / folder).rglob("*.jpg"))


def _clothes_classes(root):
    """(person, outfit) pairs of the LaST train tree, from the file names: fields 0 and 5."""
    return {(n.split("_")[0], n.split("_")[5]) for n in _train_names(root, "last/train")}


def _market_train(root):
    """(person ids, camera ids) of the Market-1501 train tree, from its file names."""
    names = _train_names(root, "Market-1501-v15.09.15/bounding_box_train")
    found = [re.match(r"^(-?\d+)_c(\d)s", n).groups() for n in names]
    return {p for p, _ in found}, {c for _, c in found}, len(names)


def _train_run(config, opts, out):
    """tools/train_net.py's main in this process (results.json included)."""
    args = Namespace(config_file=config, opts=opts + ["OUTPUT_DIR", str(out)], eval_only=False)
    args.resume = False
    load_tool("train_net").main(args)
    return out


def test_every_config_builds():
    """Each YAML under configs/ merges and passes the checked ranges (no ImageNet file)."""
    paths = sorted(
        os.path.join(d, n) for d, _, names in os.walk(CONFIGS) for n in names if n.endswith(".yml")
    )
    assert {CLOTHES, *JOINT.values()} <= set(paths)
    for path in paths:
        build_cfg(path, ["MODEL.BACKBONE.PRETRAIN", "False"])


# LaST's clothes classes -------------------------------------------------------------------


def test_clothes_recipe_trains_one_class_per_person_and_outfit(
    trees, fast_cpu_opts, tmp_path, monkeypatch
):
    monkeypatch.setenv("FASTREID_DATASETS", str(trees))
    cfg = build_cfg(CLOTHES, fast_cpu_opts + SMALL_OPTS)
    assert cfg.DATASETS.NAMES == ("LaSTClothes",) and cfg.MODEL.LOSSES.NAME == ("CrossEntropyLoss",)
    assert cfg.SOLVER.OPT == "SGD" and cfg.MODEL.LOSSES.CE.EPSILON == 0.0
    out = _train_run(CLOTHES, fast_cpu_opts + SMALL_OPTS, tmp_path / "clothes")
    weights = torch.load(out / "model_final.pth", map_location="cpu", weights_only=True)["model"]
    classes = _clothes_classes(trees)
    assert len(classes) > len({p for p, _ in classes})  # some persons wear several outfits
    assert weights["heads.weight"].shape[0] == len(classes)
    results = read_run_results(str(out))
    assert set(results["evaluation"]["datasets"]) == {"LaSTVal"}  # kept by LaST val ...
    assert set(results["final_test"]["datasets"]) == {"LaST"}  # ... tested on LaST test


# Joint training ---------------------------------------------------------------------------


@pytest.mark.parametrize("other", sorted(JOINT))
def test_joint_train_set_is_the_union_with_ids_kept_apart(trees, fast_cpu_opts, monkeypatch, other):
    monkeypatch.setenv("FASTREID_DATASETS", str(trees))
    cfg = build_cfg(JOINT[other], fast_cpu_opts + SMALL_OPTS)
    assert cfg.DATASETS.NAMES == ("Market1501", other) and cfg.DATASETS.TESTS == ("Market1501",)
    train = build_train_set(cfg)
    market_pids, market_cams, market_images = _market_train(trees)
    if other == "LaSTClothes":  # the generator's own tally and the file names agree
        other_classes = len(_clothes_classes(trees))
        other_cams = 1  # LaST has no cameras: one per dataset
        assert other_classes == synthetic.read_counts(str(trees))["last"]["train"]["outfits"]
        other_images = synthetic.read_counts(str(trees))["last"]["train"]["images"]
    else:
        counts = synthetic.read_counts(str(trees))["msmt17"]["train"]
        other_classes, other_images = counts["ids"], counts["images"]
        lines = (trees / "MSMT17_V1" / "list_train.txt").read_text().split()[::2]
        other_cams = len({os.path.basename(p).split("_")[2] for p in lines})
    assert len(train) == market_images + other_images
    assert train.num_classes == len(market_pids) + other_classes
    assert train.num_cameras == len(market_cams) + other_cams
    # After relabelling, no class or camera holds images of both datasets.
    labels = {}
    for path, pid, camid in train.img_items:
        source = "market" if "Market-1501" in path else "other"
        labels.setdefault(source, (set(), set()))
        labels[source][0].add(train.pid_dict[pid])
        labels[source][1].add(train.cam_dict[camid])
    assert not labels["market"][0] & labels["other"][0]
    assert not labels["market"][1] & labels["other"][1]


@pytest.fixture(scope="module")
def joint_run(trees, module_tmp):
    """One epoch of configs/Market1501/joint_LaSTClothes_R50.yml, through train_net's main."""
    from conftest import FAST_CPU_OPTS

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FASTREID_DATASETS", str(trees))  # read by the run in this process
        out = module_tmp.mktemp("joint")
        return _train_run(JOINT["LaSTClothes"], FAST_CPU_OPTS + SMALL_OPTS, out)


def test_joint_run_classifies_the_union_and_evaluates_on_market_only(trees, joint_run):
    weights = torch.load(joint_run / "model_final.pth", map_location="cpu", weights_only=True)
    market_pids, _, _ = _market_train(trees)
    assert weights["model"]["heads.weight"].shape[0] == len(market_pids) + len(
        _clothes_classes(trees)
    )
    results = read_run_results(str(joint_run))
    assert set(results["evaluation"]["datasets"]) == {"Market1501"}
    assert "final_test" not in results
    evaluated = set()
    for line in (joint_run / "metrics.json").read_text().splitlines():
        evaluated |= {k for k in json.loads(line) if k.endswith("mAP")}
    assert evaluated == {"mAP"}  # one test set: fastreid's unprefixed keys, Market1501's


# Short-term targets in the transfer table ------------------------------------------------


def test_matrix_on_short_term_targets_skips_the_rows_own_dataset(
    trees, joint_run, fast_cpu_opts, tmp_path, monkeypatch, capsys
):
    """The joint Market1501 + LaSTClothes model (its config.yaml beside it names its training
    data) x Market1501 / DukeMTMC x direct / fine-tuned: its two DukeMTMC cells run, its two
    Market1501 cells read "source". Kept to one row for the test budget: the random-init row
    runs end to end in tools/run_demo.py --smoke (test_demo), its Market1501 / DukeMTMC
    recipes are checked in test_short_term_fine_tunes_use_the_base_recipe. (PRCC as a
    target: test_transfer.)"""
    monkeypatch.setenv("FASTREID_DATASETS", str(trees))
    output = tmp_path / "table"
    argv = ["--source", "joint={}".format(joint_run / "model_final.pth")]
    argv += ["--datasets", "Market1501", "DukeMTMC", "--output", str(output)]
    argv += ["--no-print-table", *fast_cpu_opts, *SMALL_OPTS]
    assert load_tool("transfer_matrix").main(argv) == 0
    out = capsys.readouterr().out
    assert out.count(": done in ") == 2 and out.count("shown as source, not run") == 2, out
    table = (output / "transfer_table.md").read_text().splitlines()
    assert table[2] == (
        "| pre-training | Market direct | Duke direct | Market fine-tuned | Duke fine-tuned |"
    )
    joint = [c.strip() for c in table[4].split("|")[1:-1]]
    assert joint[0] == "joint" and joint[1] == joint[3] == SOURCE_CELL
    assert " / " in joint[2] and " / " in joint[4] and " - " not in table[4]
    rows = list(csv.DictReader((output / "transfer_table.csv").read_text().splitlines()))
    assert rows[0]["Market direct R1"] == rows[0]["Market fine-tuned mAP"] == "source"
    assert not (output / "runs" / "joint" / "Market1501-finetune").exists()
    run = output / "runs" / "joint" / "DukeMTMC-finetune"
    assert CLASSIFIER_NOT_LOADED in (run / "log.txt").read_text()  # the load report
    _assert_base_recipe(yaml.safe_load((run / "config.yaml").read_text()), "DukeMTMC")


def _assert_base_recipe(merged, dataset):
    """A short-term target's fine-tune: the base recipe (cross-entropy, SGD, flips), tested on
    the target alone."""
    assert merged["MODEL"]["LOSSES"]["NAME"] == ["CrossEntropyLoss"]
    assert merged["MODEL"]["LOSSES"]["CE"]["EPSILON"] == 0.0
    assert merged["SOLVER"]["OPT"] == "SGD" and merged["INPUT"]["FLIP"]["ENABLED"]
    assert merged["DATASETS"]["TESTS"] == [dataset]


# Plumbing, with the runs faked -------------------------------------------------------------


def test_a_rows_training_data_comes_from_its_name_or_its_config(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model_final.pth").write_bytes(b"")
    (run / "config.yaml").write_text("DATASETS:\n  NAMES: [Market1501, LaSTClothes]\n")
    assert training_datasets(str(run / "model_final.pth"), "x") == ("Market1501", "LaSTClothes")
    assert training_datasets(str(tmp_path / "dukemtmc.pth"), "dukemtmc") == ("DukeMTMC",)
    assert training_datasets(str(tmp_path / "LaST.pth"), "LaST") == ()
    sources = trained_sources(str(tmp_path / "out"), ["LaSTClothes", "Market1501"])
    assert [(s.name, s.trained_on) for s in sources] == [
        ("Market1501", ("Market1501",)),
        ("LaSTClothes", ("LaSTClothes",)),
    ]


def test_a_rows_cells_build_the_whole_model_of_its_run(tmp_path):
    """model_overrides: every MODEL key of the config.yaml beside the file (a head of one's
    own with keys of its own, MODEL.IMPORTS) and the input size, but the keys of the cell's
    own run (device, weights, the target's classes, losses, the stem)."""
    from lastreid.transfer.sources import model_overrides

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(
        "MODEL:\n  DEVICE: cuda\n  IMPORTS: [/x/toy.py]\n  LOSSES: {NAME: [CrossEntropyLoss]}\n"
        "  HEADS: {NAME: ToyHead, NUM_CLASSES: 72, TOY: {WIDTH: 7}}\n"
        "  BACKBONE: {DEPTH: 18x, TORCHVISION_STEM: true}\n"
        "INPUT: {SIZE_TRAIN: [64, 32], SIZE_TEST: [64, 32]}\nSOLVER: {MAX_EPOCH: 3}\n"
    )
    pairs = model_overrides(str(run / "model_best.pth"))
    assert dict(zip(pairs[::2], pairs[1::2])) == {
        "MODEL.BACKBONE.DEPTH": "18x",
        "MODEL.HEADS.NAME": "ToyHead",
        "MODEL.HEADS.TOY.WIDTH": "7",
        "MODEL.IMPORTS": "['/x/toy.py']",
        "INPUT.SIZE_TRAIN": "[64, 32]",
        "INPUT.SIZE_TEST": "[64, 32]",
    }
    assert model_overrides(str(tmp_path / "elsewhere.pth")) == []  # no run beside it


def _matrix(tmp_path, protocol, names=("LaSTClothes",), datasets=("Market1501", "PRCC")):
    sources = trained_sources(str(tmp_path / "out"), list(names))
    matrix = TransferMatrix(
        str(tmp_path / "out"),
        sources,
        TRANSFER_CONFIGS["synthetic"],
        datasets=datasets,
        protocol=protocol,
        opts=["MODEL.BACKBONE.PRETRAIN", "False"],
    )
    matrix.runner.log = lambda line: None
    return matrix


def test_clothes_row_is_selected_on_market_test_under_the_paper_protocol(tmp_path, monkeypatch):
    matrix = _matrix(tmp_path, "both")
    spawned = fake_runs(monkeypatch)
    matrix.train_sources()
    assert len(spawned) == 2
    clean, paper = ({k: v for k, v in zip(c[::1], c[1:])} for c in spawned)
    assert clean["--config-file"] == paper["--config-file"] == CLOTHES
    assert clean["OUTPUT_DIR"].endswith(os.path.join("sources", "LaSTClothes"))
    assert paper["OUTPUT_DIR"].endswith(os.path.join("sources", "LaSTClothes-paper"))
    assert "DATASETS.TESTS" not in clean and paper["DATASETS.TESTS"] == '("Market1501",)'
    assert paper["TEST.EVAL_PERIOD"] == paper["SOLVER.CHECKPOINT_PERIOD"] == "1"
    weights = {
        (c.dataset, c.protocol): matrix.spec(c).opts[matrix.spec(c).opts.index("MODEL.WEIGHTS") + 1]
        for c in matrix.cells()
        if c.setting == "finetune"
    }
    for dataset in ("Market1501", "PRCC"):
        assert weights[(dataset, "clean")] == os.path.join(
            matrix.source_dir(matrix.sources[0]), "model_best.pth"
        )
        assert weights[(dataset, "paper")] == matrix.sources[0].paper.path
    for protocol, expected in (("clean", ["LaSTClothes"]), ("paper", ["LaSTClothes-paper"])):
        matrix = _matrix(tmp_path, protocol)
        assert [
            matrix.source_dir(s).rpartition(os.sep)[2] for s in matrix.trained_runs()
        ] == expected


def test_source_cells_are_not_run_nor_checked_for_their_recipe(tmp_path, monkeypatch):
    matrix = _matrix(tmp_path, "clean", names=("Market1501",), datasets=("Market1501",))
    source = matrix.sources[0]
    os.makedirs(os.path.dirname(source.path))
    torch.save({"model": {}}, source.path)
    (tmp_path / "out" / "sources" / "Market1501" / "last_checkpoint").write_text("model_final.pth")
    torch.save({"model": {}}, os.path.join(os.path.dirname(source.path), "model_final.pth"))
    (tmp_path / "out" / "sources" / "Market1501" / "results.json").write_text('{"evaluation": {}}')
    spawned = fake_runs(monkeypatch)
    cells = matrix.run()
    assert spawned == [] and [c.is_source for c in cells] == [True, True]
    assert matrix.runner.settle(matrix.stale_candidates(), matrix.output) == []
    table = (tmp_path / "out" / "transfer_table.md").read_text().splitlines()
    assert table[4] == "| Market1501 | source | source |"


def test_short_term_fine_tunes_use_the_base_recipe(tmp_path, fast_cpu_opts, monkeypatch):
    """The random-init row's Market1501 / DukeMTMC cells: both run (no training data of its
    own), each fine-tune's merged config the base recipe on its own test set."""
    matrix = TransferMatrix(
        str(tmp_path / "out"),
        discover_sources(random_init=True),
        TRANSFER_CONFIGS["reference"],
        datasets=("Market1501", "DukeMTMC"),
        settings=("finetune",),
        opts=fast_cpu_opts,
    )
    matrix.runner.log = lambda line: None
    spawned = fake_runs(monkeypatch)
    matrix.run()
    assert len(spawned) == 2
    for cmd, dataset in zip(spawned, ("Market1501", "DukeMTMC")):
        config, opts = cmd[cmd.index("--config-file") + 1], cmd[cmd.index("--resume") + 1 :]
        cfg = yaml.safe_load(config_yaml_text(build_cfg(config, opts)))  # what the run writes
        _assert_base_recipe(cfg, dataset)


def _fake_training(metrics_by_epoch, classes):
    """A fake_runs action that leaves what a finished train_net run leaves: the config it was given
    (with its classes filled in), last_checkpoint, model_final.pth, metrics.json (one
    evaluation per epoch, 3 iterations each) and results.json (the last epoch)."""

    def spawn(cmd, log_path):
        out = os.path.dirname(log_path)
        config, opts = cmd[cmd.index("--config-file") + 1], cmd[cmd.index("--resume") + 1 :]
        recipe = config_sha256(build_cfg(config, opts))
        cfg = build_cfg(config, opts)
        cfg.defrost()
        cfg.MODEL.HEADS.NUM_CLASSES = classes
        with open(os.path.join(out, "config.yaml"), "w") as f:
            f.write(config_yaml_text(cfg, recipe_sha256=recipe))
        with open(os.path.join(out, "metrics.json"), "w") as f:
            for epoch, (r1, m_ap) in enumerate(metrics_by_epoch, 1):
                f.write(json.dumps({"iteration": 3 * epoch - 1, "Rank-1": r1, "mAP": m_ap}) + "\n")
        r1, m_ap = metrics_by_epoch[-1]
        last = {"Market1501": {"Rank-1": r1, "mAP": m_ap}}
        write_run_results(
            cfg, {"epoch": len(metrics_by_epoch), "datasets": last}, iterations_per_epoch=3
        )
        with open(os.path.join(out, "last_checkpoint"), "w") as f:
            f.write("model_final.pth")
        open(os.path.join(out, "model_final.pth"), "wb").close()
        return 0

    return spawn


def test_joint_table_trains_each_run_once_and_reads_its_numbers(tmp_path, monkeypatch, capsys):
    joint = load_tool("joint_table")
    history = [(10.0, 5.0), (30.0, 20.0), (20.0, 15.0)]  # the paper protocol picks epoch 2
    spawned = fake_runs(monkeypatch, _fake_training(history, 7))
    argv = ["--output", str(tmp_path), "--protocol", "both", "--no-print-table"]
    argv += ["MODEL.BACKBONE.PRETRAIN", "False", "SOLVER.MAX_EPOCH", "3", "SOLVER.STEPS", "[]"]
    assert joint.main(argv) == 0
    assert len(spawned) == 6  # 3 trainings x 2 protocols
    configs = [c[c.index("--config-file") + 1] for c in spawned[::2]]
    assert [os.path.relpath(c, REPO) for c in configs] == [c for _, c in JOINT_RUNS]
    paper = [c for c in spawned if "INPUT.INTERPOLATION" in c]
    assert len(paper) == 3 and all(c[c.index("TEST.EVAL_PERIOD") + 1] == "1" for c in paper)
    table = (tmp_path / "joint_table.md").read_text().splitlines()
    assert table[2] == "| training set | classes | iterations / epoch | Market1501 |"
    assert table[4:] == [
        f"| {name} | 7 | 3 | 20.0 / 15.0; 30.0 / 20.0 (ep 2) |" for name, _ in JOINT_RUNS
    ]
    rows = list(csv.DictReader((tmp_path / "joint_table.csv").read_text().splitlines()))
    assert [r["paper epoch"] for r in rows] == ["2"] * 3 and rows[0]["epoch"] == "3"
    capsys.readouterr()
    assert joint.main(argv) == 0 and len(spawned) == 6  # finished: nothing trained again
    assert capsys.readouterr().out.count("done before, skipped") == 6
    with pytest.raises(InputError, match=r"6 run\(s\) .*Market1501 \+ MSMT17 \| paper.*--stale"):
        joint.main(argv + ["TEST.IMS_PER_BATCH", "32"])
    assert len(spawned) == 6
