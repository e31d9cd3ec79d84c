"""Bad inputs stop a run with one clear message, before any work where possible, and never
damage what a run folder already holds: corrupt images (error naming the file, or skipped
and counted with DATALOADER.SKIP_BAD_IMAGES), untrusted or backbone-less checkpoints for
--eval-only, and bad configs (through tools/train_net.py, in subprocesses run side by side)."""

import argparse
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys

from lastreid.images import BadImageError, ReidImageDataset
from lastreid.loaders import build_test_set, build_train_set
from lastreid.startup import build_cfg

import pytest
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "LaST", "bagtricks_R50.yml")
TRAIN_NET = os.path.join(REPO, "tools", "train_net.py")
# fmt: off
SMALL_MODEL = [
    "MODEL.DEVICE", "cpu",
    "MODEL.BACKBONE.PRETRAIN", "False",
    "MODEL.BACKBONE.DEPTH", "18x",
    "MODEL.BACKBONE.FEAT_DIM", "512",
    "INPUT.SIZE_TRAIN", "[32, 16]",
    "INPUT.SIZE_TEST", "[32, 16]",
    "MODEL.CPU_BF16", "off",
    "MODEL.CHANNELS_LAST", "off",
]
# fmt: on


def corrupt(path, how="truncate"):
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 3] if how == "truncate" else b"this is not a JPEG file")


@pytest.fixture(scope="module")
def bad_root(default_root, module_tmp):
    """A copy of the default LaST tree with one truncated training image, one training image
    that is not an image at all, and one truncated gallery image."""
    root = module_tmp.mktemp("bad_datasets")
    shutil.copytree(default_root / "last", root / "last")
    train = sorted((root / "last" / "train").rglob("*.jpg"))
    gallery = sorted((root / "last" / "val" / "gallery").rglob("*.jpg"))
    corrupt(train[3])
    corrupt(train[40], how="garbage")
    corrupt(gallery[7])
    return dict(root=root, train=[str(train[3]), str(train[40])], gallery=str(gallery[7]))


@pytest.fixture
def datasets_env(bad_root, monkeypatch):
    monkeypatch.setenv("FASTREID_DATASETS", str(bad_root["root"]))
    return bad_root


def _cfg(*opts):
    return build_cfg(CONFIG, SMALL_MODEL + list(opts))


class _Records(logging.Handler):
    """Collects lastreid.images's records directly (default_setup turns off propagation of
    the `lastreid` logger, so pytest's caplog may not see them)."""

    def __enter__(self):
        self.messages = []
        self.logger = logging.getLogger("lastreid.images")
        self.level, self.logger.level = self.logger.level, logging.WARNING
        self.logger.addHandler(self)
        return self

    def emit(self, record):
        self.messages.append(record.getMessage())

    def __exit__(self, *exc):
        self.logger.removeHandler(self)
        self.logger.level = self.level


def _loader(dataset, workers):
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=16,
        num_workers=workers,
        timeout=900 if workers else 0,
        collate_fn=lambda batch: [item["img_paths"] for item in batch],
    )


# Corrupt images ---------------------------------------------------------------------------


def test_corrupt_training_image_stops_with_its_name_through_a_worker(datasets_env):
    dataset = build_train_set(_cfg())
    assert isinstance(dataset, ReidImageDataset)
    with pytest.raises(BadImageError) as err:
        for _ in _loader(dataset, workers=1):
            pass
    first = datasets_env["train"][0]
    message = str(err.value)
    assert message.startswith(f"cannot decode {first}: ") and "truncated" in message
    assert "\n" not in message and "worker process" in message
    assert err.value.path == first


def test_image_that_is_no_image_names_it_too(datasets_env):
    dataset = build_train_set(_cfg())
    index = [item[0] for item in dataset.img_items].index(datasets_env["train"][1])
    with pytest.raises(
        BadImageError, match="cannot decode .*: UnidentifiedImageError: cannot identify image file$"
    ):
        dataset[index]


def test_skip_bad_images_replaces_and_counts_them(datasets_env):
    cfg = _cfg("DATALOADER.SKIP_BAD_IMAGES", "True")
    dataset = build_train_set(cfg)
    seen = [path for batch in _loader(dataset, workers=1) for path in batch]
    assert len(seen) == len(dataset) and not set(datasets_env["train"]) & set(seen)

    # In this process (a worker keeps its own count): logged with the count and the names.
    pids = {item[0]: item[1] for item in dataset.img_items}
    with _Records() as records:
        items = [dataset[i] for i in range(len(dataset))]
    assert sorted(dataset.bad_images) == sorted(datasets_env["train"])
    warnings = [m for m in records.messages if "SKIP_BAD_IMAGES" in m]
    assert len(warnings) == 2 and "2 skipped so far" in warnings[-1]
    assert all(path in warnings[-1] for path in datasets_env["train"])
    # Replaced by an image of the same identity, so identity-balanced batches stay balanced.
    for bad in datasets_env["train"]:
        index = [item[0] for item in dataset.img_items].index(bad)
        assert items[index]["img_paths"] != bad
        assert pids[items[index]["img_paths"]] == pids[bad]
        with _Records() as again:
            assert dataset[index]["img_paths"] != bad
        assert not again.messages  # warned once per file and process, not per sampling


def test_test_sets_never_skip_mid_evaluation(datasets_env):
    """Without the switch the bad gallery image stops the evaluation; with it, it is found
    up front and left out, so query and gallery stay aligned."""
    cfg = _cfg()
    test_set, num_query = build_test_set(cfg, "LaSTVal")
    index = [item[0] for item in test_set.img_items].index(datasets_env["gallery"])
    assert index >= num_query
    with pytest.raises(BadImageError, match="cannot decode " + datasets_env["gallery"]):
        test_set[index]

    with _Records() as records:
        kept, kept_query = build_test_set(_cfg("DATALOADER.SKIP_BAD_IMAGES", "True"), "LaSTVal")
    assert kept_query == num_query and len(kept) == len(test_set) - 1
    assert datasets_env["gallery"] not in [item[0] for item in kept.img_items]
    assert any(
        "1 unreadable image(s) left out" in m and datasets_env["gallery"] in m
        for m in records.messages
    )


# Command-line failures: run side by side, then checked one by one -------------------------


def _snapshot(folder):
    return {
        name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
        for name in sorted(os.listdir(folder))
    }


def _run_folder(path):
    """A run folder as a previous training left it (small stand-in files)."""
    path.mkdir(parents=True)
    torch.save({"model": {"w": torch.ones(2)}, "epoch": 4}, path / "model_0004.pth")
    (path / "last_checkpoint").write_text("model_0004.pth")
    (path / "metrics.json").write_text('{"iteration": 9, "total_loss": 1.0}\n')
    (path / "config.yaml").write_text("OUTPUT_DIR: x\n")
    return path


EXTRACT = os.path.join(REPO, "tools", "extract_features.py")
FORKED_RUNS = os.path.join(REPO, "tests", "forked_runs.py")


@pytest.fixture(scope="module")
def failed_starts(module_tmp, default_root, bad_root):
    """Runs every failing command; returns name -> (exit status, stderr, run folder, its
    snapshot before)."""
    tmp = module_tmp.mktemp("failed_starts")
    untrusted = tmp / "untrusted.pth"
    model = {"backbone.conv1.weight": torch.zeros(64, 3, 7, 7)}
    torch.save({"model": model, "args": argparse.Namespace(lr=0.1)}, untrusted)
    headless = tmp / "headless.pth"
    torch.save({"model": {"heads.weight": torch.zeros(10, 512)}}, headless)
    corrupt_weights = tmp / "corrupt.pth"
    torch.save({"model": model}, corrupt_weights)
    corrupt(corrupt_weights)
    everything_bad = tmp / "all_bad"
    shutil.copytree(default_root / "last", everything_bad / "last")
    for image in (everything_bad / "last" / "train").rglob("*.jpg"):
        corrupt(image)

    train, evaluate = (
        [TRAIN_NET, "--config-file", CONFIG],
        [TRAIN_NET, "--config-file", CONFIG, "--eval-only"],
    )
    extract = [EXTRACT, "--config-file", CONFIG, "--dataset", "LaSTVal", "-o", str(tmp / "f.npz")]
    # name: (command, extra options, FASTREID_DATASETS, whether a previous run's folder exists)
    cases = {
        "unknown_key": (train, ["MODEL.NO_SUCH_KEY", "1"], bad_root["root"], False),
        "unknown_dataset": (train, ["DATASETS.NAMES", '("NoSuchSet",)'], bad_root["root"], True),
        "pretrain_missing": (
            train,
            ["MODEL.BACKBONE.PRETRAIN", "True", "MODEL.BACKBONE.PRETRAIN_PATH", "/nowhere/r50.pth"],
            bad_root["root"],
            True,
        ),
        "missing_root": (train, [], tmp / "no_datasets", False),
        "missing_root_resume": (train + ["--resume"], [], tmp / "no_datasets", True),
        "untrusted_weights": (evaluate, ["MODEL.WEIGHTS", str(untrusted)], bad_root["root"], True),
        "no_backbone_weights": (evaluate, ["MODEL.WEIGHTS", str(headless)], bad_root["root"], True),
        "corrupt_weights": (
            evaluate,
            ["MODEL.WEIGHTS", str(corrupt_weights)],
            bad_root["root"],
            True,
        ),
        "corrupt_training_images": (
            train,
            ["DATALOADER.NUM_WORKERS", "1", "SOLVER.IMS_PER_BATCH", "16", "SOLVER.MAX_EPOCH", "2"]
            + ["SOLVER.STEPS", "[]"],  # the recipe's steps are past a 2-epoch run
            everything_bad,
            True,
        ),
        "extract_corrupt_weights": (
            extract + ["--weights", str(corrupt_weights)],
            [],
            bad_root["root"],
            False,
        ),
        "extract_missing_root": (extract, [], tmp / "no_datasets", False),
        # 100 identities a step, the default tree has 72: fastreid's sampler would spin forever.
        "too_few_identities": (train, ["SOLVER.IMS_PER_BATCH", "400"], default_root, True),
    }
    # Each command in a child forked from one process that imported torch and fastreid once
    # (tests/forked_runs.py), as `python tool.py ...` would run it.
    runs, folders = [], {}
    for name, (command, opts, root, existing) in cases.items():
        folder = _run_folder(tmp / name / "run") if existing else tmp / name / "fresh"
        folders[name] = (folder, _snapshot(folder) if folder.exists() else None)
        argv = command + SMALL_MODEL + opts + ["OUTPUT_DIR", str(folder)]
        env = {"FASTREID_DATASETS": str(root)}
        runs.append({"name": name, "argv": argv, "moment": None, "output": None, "env": env})
    with open(tmp / "cases.json", "w") as f:
        json.dump(runs, f)
    subprocess.run(
        [sys.executable, FORKED_RUNS, str(tmp / "cases.json"), str(tmp / "results.json")],
        cwd=REPO,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        check=True,
        timeout=1800,  # a guard against a hang only
    )
    with open(tmp / "results.json") as f:
        done = json.load(f)
    results = {}
    for name, (folder, before) in folders.items():
        results[name] = (done[name]["status"], done[name]["stderr"], folder, before)
    return results


def _failed(failed_starts, name, *words, tool="train_net.py"):
    """The command failed with exit status 1 and one line `<tool>: error: ...` holding
    `words` as its last stderr line, without a traceback."""
    code, err, folder, before = failed_starts[name]
    assert "TIMEOUT" not in err, err[-2000:]
    assert code == 1, f"{name} exited {code}:\n{err[-2000:]}"
    assert "Traceback" not in err, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"{tool}: error: "), last
    for word in words:
        assert word in last, f"{word!r} not in the last stderr line: {last}\n{err[-2000:]}"
    return folder, before


@pytest.mark.parametrize(
    "name, words",
    [
        ("unknown_key", ["MODEL.NO_SUCH_KEY"]),
        ("unknown_dataset", ["DATASETS.NAMES", "NoSuchSet"]),
        ("pretrain_missing", ["MODEL.BACKBONE.PRETRAIN_PATH", "/nowhere/r50.pth"]),
        (
            "missing_root",
            ["LaST: folder not found: ", "no_datasets/last/train", "FASTREID_DATASETS="],
        ),
        ("missing_root_resume", ["LaST: folder not found: ", "no_datasets/last/train"]),
    ],
)
def test_bad_config_fails_before_writing_anything(failed_starts, name, words):
    folder, before = _failed(failed_starts, name, *words)
    if before is None:
        assert not folder.exists()  # not even the output folder
    else:
        assert _snapshot(folder) == before  # not even config.yaml or log.txt


def test_untrusted_checkpoint_is_refused_for_eval_only(failed_starts):
    folder, before = _failed(
        failed_starts,
        "untrusted_weights",
        "Refusing to load checkpoint",
        "untrusted.pth",
        "MODEL.TRUST_CHECKPOINTS",
        "argparse.Namespace",
    )
    _untouched(folder, before)


def test_checkpoint_without_backbone_is_refused_for_eval_only(failed_starts):
    folder, before = _failed(
        failed_starts, "no_backbone_weights", "headless.pth", "no backbone weights"
    )
    _untouched(folder, before)


def test_corrupt_checkpoint_is_one_line_naming_it(failed_starts):
    folder, before = _failed(
        failed_starts,
        "corrupt_weights",
        "Cannot read checkpoint",
        "corrupt.pth",
        "truncated, corrupt or not a torch file",
    )
    _untouched(folder, before)


def test_corrupt_training_images_stop_the_run_naming_one(failed_starts):
    folder, before = _failed(
        failed_starts,
        "corrupt_training_images",
        "error: cannot decode ",
        "/all_bad/last/train/",
        "worker process",
    )
    _untouched(folder, before)
    assert not [n for n in os.listdir(folder) if n.startswith("model_") and n not in before]


def test_too_few_identities_for_one_batch_is_one_line(failed_starts):
    folder, before = _failed(
        failed_starts,
        "too_few_identities",
        "NaiveIdentitySampler takes 100 identities a step (SOLVER.IMS_PER_BATCH 400 / ",
        "training set (LaST) has 72: use SOLVER.IMS_PER_BATCH 288 or less",
    )
    _untouched(folder, before)


@pytest.mark.parametrize(
    "name, words",
    [
        ("extract_corrupt_weights", ["Cannot read checkpoint", "corrupt.pth"]),
        ("extract_missing_root", ["LaSTVal: folder not found: ", "no_datasets/last/val/query"]),
    ],
)
def test_other_tools_report_errors_in_one_line(failed_starts, name, words):
    _failed(failed_starts, name, *words, tool="extract_features.py")
    assert not (failed_starts[name][2].parent.parent / "f.npz").exists()


def _untouched(folder, before):
    """The run's checkpoints, pointer and metrics history are byte for byte as they were
    (default_setup does rewrite config.yaml and append to log.txt, as in fast-reid)."""
    after = _snapshot(folder)
    for name in ("model_0004.pth", "last_checkpoint", "metrics.json"):
        assert after[name] == before[name], name
