"""lastreid.checkpoint: atomic saves, weights-only loads, the key report and the
conversion of the public LaST code's ResNet-50 BoT checkpoints."""

import importlib.util
import logging
import os
import subprocess
import sys
import textwrap
from collections import OrderedDict
from pathlib import Path

import lastreid  # noqa: F401  (before fastreid)
from lastreid import checkpoint as ckpt
from lastreid.atomic import save_atomic
from lastreid.checkpoint import (
    CLASSIFIER_NOT_LOADED,
    CLASSIFIER_UNUSED,
    Checkpointer,
    CheckpointError,
    CorruptCheckpointError,
    UntrustedCheckpointError,
    backbone_loaded,
    convert_reference_state_dict,
    is_reference_state_dict,
)
from lastreid.config import add_lastreid_config

import numpy as np
import pytest
import torch
import torchvision
from fastreid.config import get_cfg
from fastreid.modeling import build_model
from fastreid.solver import build_lr_scheduler
from torch import nn

REPO = Path(__file__).resolve().parents[1]
NUM_CLASSES = 7


class Arbitrary:
    """A class only a full pickle can rebuild."""

    def __init__(self, value):
        self.value = value


# Models ----------------------------------------------------------------------------------


def bot_cfg(num_classes=NUM_CLASSES):
    cfg = add_lastreid_config(get_cfg())
    # fmt: off
    cfg.merge_from_list(
        [
            "MODEL.DEVICE", "cpu",
            "MODEL.BACKBONE.PRETRAIN", False,
            "MODEL.BACKBONE.LAST_STRIDE", 1,
            "MODEL.BACKBONE.NORM", "BN",
            "MODEL.HEADS.NAME", "EmbeddingHead",
            "MODEL.HEADS.NECK_FEAT", "before",
            "MODEL.HEADS.WITH_BNNECK", True,
            "MODEL.HEADS.POOL_LAYER", "GlobalAvgPool",
            "MODEL.HEADS.CLS_LAYER", "Linear",
            "MODEL.HEADS.NUM_CLASSES", num_classes,
            "MODEL.HEADS.NORM", "BN",
        ]
    )
    # fmt: on
    return cfg


class ReferenceBoT(nn.Module):
    """Written from the LaST paper's description of its BoT baseline and the public code's
    key names: torchvision ResNet-50 stem and stages, last stride 1, GAP, a BatchNorm1d
    neck without shift and a bias-free linear classifier."""

    def __init__(self, num_classes):
        super().__init__()
        net = torchvision.models.resnet50(weights=None)
        net.layer4[0].conv2.stride = (1, 1)
        net.layer4[0].downsample[0].stride = (1, 1)
        self.base = nn.Sequential(net.conv1, net.bn1, net.relu)
        self.pool = net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (
            net.layer1,
            net.layer2,
            net.layer3,
            net.layer4,
        )
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.bottleneck = nn.BatchNorm1d(2048)
        self.bottleneck.bias.requires_grad_(False)
        self.classifier = nn.Linear(2048, num_classes, bias=False)

    def forward(self, x):
        x = self.pool(self.base(x))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        feat = self.bottleneck(self.gap(x).flatten(1))
        return feat if not self.training else self.classifier(feat)


def randomise_(model, seed):
    """Random weights and BatchNorm statistics (not the defaults, which would hide a BN
    parameter or buffer landing in the wrong place)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                fan_in = module.weight[0].numel()
                module.weight.copy_(
                    torch.randn(module.weight.shape, generator=g) * (2.0 / fan_in) ** 0.5
                )
            elif isinstance(module, nn.modules.batchnorm._BatchNorm):
                c = module.num_features
                module.weight.copy_(0.5 + torch.rand(c, generator=g))
                module.bias.copy_(0.1 * torch.randn(c, generator=g))
                module.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                module.running_var.copy_(0.5 + 1.5 * torch.rand(c, generator=g))
                module.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=g)))
            elif isinstance(module, nn.Linear):
                module.weight.copy_(0.01 * torch.randn(module.weight.shape, generator=g))
    return model


class TinyReid(nn.Module):
    """fastreid-like key names (backbone.conv1/bn1/layer1, heads.bottleneck.0, heads.weight)
    at a size that keeps the file tests fast."""

    def __init__(self, num_classes=5):
        super().__init__()
        self.backbone = nn.Sequential(
            OrderedDict(
                conv1=nn.Conv2d(3, 4, 3, bias=False),
                bn1=nn.BatchNorm2d(4),
                layer1=nn.Sequential(nn.Conv2d(4, 4, 1, bias=False), nn.BatchNorm2d(4)),
            )
        )
        self.heads = nn.Module()
        self.heads.bottleneck = nn.Sequential(nn.BatchNorm2d(4))
        self.heads.weight = nn.Parameter(torch.randn(num_classes, 4))


def tiny(seed, num_classes=5):
    torch.manual_seed(seed)
    return randomise_(TinyReid(num_classes), seed)


def states_equal(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# Reference checkpoints -------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference(module_tmp):
    """A randomised reference model and its checkpoint in the public code's format,
    saved from DataParallel-free and DataParallel-style (module.) state dicts."""
    torch.manual_seed(0)
    model = randomise_(ReferenceBoT(NUM_CLASSES), seed=1).eval()
    folder = module_tmp.mktemp("reference")
    path = folder / "checkpoint_best.pth"
    # The public code stores its selection score as a numpy float.
    torch.save({"state_dict": model.state_dict(), "epoch": 80, "best_acc": np.float64(0.41)}, path)
    return model, path


def test_reference_checkpoint_matches_reference_features(reference, caplog):
    ref_model, path = reference
    assert is_reference_state_dict(ckpt.load_checkpoint_file(path))  # numpy best_acc: allowed

    torch.manual_seed(2)
    model = build_model(bot_cfg()).eval()
    # Every key of the converted reference is a key of fastreid's BoT and vice versa.
    assert set(convert_reference_state_dict(ref_model.state_dict())) == set(model.state_dict())

    checkpointer = Checkpointer(model)
    with caplog.at_level(logging.INFO, logger="lastreid.checkpoint"):
        extra = checkpointer.load(str(path))
    report = checkpointer.last_load_report
    assert report.format == ckpt.FORMAT_REFERENCE
    assert report.missing == [] and report.dropped == []
    assert backbone_loaded(report)
    assert "public LaST code" in caplog.text
    assert extra == {}  # the reference's epoch / best_acc are not fed to checkpointables

    g = torch.Generator().manual_seed(3)
    raw = torch.rand(2, 3, 64, 32, generator=g) * 255
    mean = torch.tensor(bot_cfg().MODEL.PIXEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(bot_cfg().MODEL.PIXEL_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = ref_model((raw - mean) / std)
        stock = model(raw.clone())  # fastreid normalises raw pixels itself (in place)
        assert not ckpt.has_torchvision_stem(model)
        ckpt.use_torchvision_stem(model)
        assert ckpt.has_torchvision_stem(model)
        aligned = model(raw.clone())

    def rel(a, b):
        return float((a - b).norm() / b.norm())

    assert expected.shape == aligned.shape == (2, 2048)
    assert rel(aligned, expected) < 1e-4
    # fastreid's stem pooling (padding 0, ceil_mode) differs from the reference's: the
    # loader warns about it and the features really differ without the alignment.
    assert "MaxPool2d(3, stride=2, padding=1)" in caplog.text
    assert rel(stock, expected) > 1e-3


def test_converter_accepts_dataparallel_prefix_and_reports_unknown_keys(caplog):
    sd = OrderedDict(
        [
            ("module.base.0.weight", torch.randn(64, 3, 7, 7)),
            ("module.base.1.running_var", torch.rand(64)),
            ("module.layer4.2.downsample.1.bias", torch.randn(8)),
            ("module.bottleneck.num_batches_tracked", torch.tensor(3)),
            ("module.classifier.weight", torch.randn(5, 2048)),
            ("module.extra_head.weight", torch.randn(2)),
        ]
    )
    assert is_reference_state_dict(sd) and is_reference_state_dict({"state_dict": sd})
    with caplog.at_level(logging.WARNING, logger="lastreid.checkpoint"):
        out = convert_reference_state_dict({"state_dict": sd})
    assert list(out) == [
        "backbone.conv1.weight",
        "backbone.bn1.running_var",
        "backbone.layer4.2.downsample.1.bias",
        "heads.bottleneck.0.num_batches_tracked",
        "heads.weight",
        "extra_head.weight",
    ]
    assert all(out[new] is sd[old] for new, old in zip(out, sd))
    assert "extra_head" in caplog.text
    assert not is_reference_state_dict({"backbone.conv1.weight": torch.zeros(1)})


def test_torchvision_imagenet_keys_map_onto_the_backbone():
    model = build_model(bot_cfg())
    imagenet = torchvision.models.resnet50(weights=None).state_dict()
    assert ckpt.is_torchvision_resnet_state_dict(imagenet)
    converted, dropped = ckpt.convert_torchvision_resnet_state_dict(imagenet)
    assert sorted(dropped) == ["fc.bias", "fc.weight"]
    backbone_keys = {k for k in model.state_dict() if k.startswith("backbone.")}
    assert set(converted) == backbone_keys


def test_torchvision_file_as_weights_loads_backbone_and_drops_fc(tmp_path):
    source = tiny(seed=4)
    imagenet = {
        k[len("backbone.") :]: v
        for k, v in source.state_dict().items()
        if k.startswith("backbone.")
    }
    imagenet["fc.weight"], imagenet["fc.bias"] = torch.randn(10, 4), torch.randn(10)
    path = tmp_path / "resnet50-imagenet.pth"
    torch.save(imagenet, path)

    model = tiny(seed=5)
    checkpointer = Checkpointer(model)
    checkpointer.load(str(path))
    report = checkpointer.last_load_report
    assert report.format == ckpt.FORMAT_TORCHVISION
    assert set(report.dropped) == {"fc.weight", "fc.bias"}
    assert backbone_loaded(report)
    assert "heads.weight" in report.missing
    assert torch.equal(model.backbone.conv1.weight, source.backbone.conv1.weight)


# Atomic saves ----------------------------------------------------------------------------


def training_state(sched, seed=0):
    torch.manual_seed(seed)
    model = tiny(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    cfg = get_cfg()
    # fmt: off
    cfg.merge_from_list(
        [
            "SOLVER.SCHED", sched,
            "SOLVER.STEPS", [2, 4],
            "SOLVER.WARMUP_ITERS", 5,
            "SOLVER.MAX_EPOCH", 8,
        ]
    )
    # fmt: on
    schedulers = build_lr_scheduler(cfg, optimizer, iters_per_epoch=3)
    assert set(schedulers) == {"lr_sched", "warmup_sched"}
    for _ in range(3):
        optimizer.zero_grad()
        model.heads.weight.square().sum().backward()
        optimizer.step()
        for s in schedulers.values():
            s.step()
    return model, optimizer, schedulers


@pytest.mark.parametrize("sched", ["MultiStepLR", "CosineAnnealingLR"])
def test_save_round_trips_training_state_with_weights_only(tmp_path, sched):
    model, optimizer, schedulers = training_state(sched, seed=0)
    Checkpointer(model, str(tmp_path), optimizer=optimizer, **schedulers).save(
        "model_0002", epoch=2, metric=np.float64(0.375), ranks=np.array([1.0, 2.0])
    )
    path = tmp_path / "model_0002.pth"
    assert (tmp_path / "last_checkpoint").read_text() == "model_0002.pth"

    # Plain torch, no allowlist: everything we save is weights-only loadable.
    data = torch.load(path, map_location="cpu", weights_only=True)
    assert type(data["metric"]) is float and data["metric"] == 0.375
    assert torch.equal(data["ranks"], torch.tensor([1.0, 2.0], dtype=torch.float64))

    model2, optimizer2, schedulers2 = training_state(sched, seed=1)
    assert not states_equal(model.state_dict(), model2.state_dict())
    checkpointer = Checkpointer(model2, str(tmp_path), optimizer=optimizer2, **schedulers2)
    extra = checkpointer.resume_or_load("", resume=True)
    assert extra["epoch"] == 2 and extra["metric"] == 0.375
    assert states_equal(model.state_dict(), model2.state_dict())
    assert checkpointer.last_load_report.missing == []
    for name in schedulers:
        assert schedulers2[name].state_dict() == schedulers[name].state_dict()
    s1, s2 = optimizer.state_dict(), optimizer2.state_dict()
    assert s1["param_groups"] == s2["param_groups"]
    assert s1["state"].keys() == s2["state"].keys() and s1["state"]
    for i in s1["state"]:
        assert torch.equal(s1["state"][i]["momentum_buffer"], s2["state"][i]["momentum_buffer"])


def tmp_leftovers(folder):
    return [n for n in os.listdir(folder) if ".tmp." in n]


def test_failed_checkpoint_write_leaves_previous_files(tmp_path, monkeypatch):
    model = tiny(seed=0)
    checkpointer = Checkpointer(model, str(tmp_path))
    checkpointer.save("model_best", epoch=0)
    good = {k: v.clone() for k, v in model.state_dict().items()}

    real_save = torch.save

    def half_then_fail(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        f.truncate(f.tell() // 2)
        raise OSError("disk full (simulated)")

    with torch.no_grad():
        model.heads.weight.add_(1.0)
    monkeypatch.setattr(torch, "save", half_then_fail)
    with pytest.raises(OSError, match="simulated"):
        checkpointer.save("model_best", epoch=1)  # overwriting the same name
    with pytest.raises(OSError, match="simulated"):
        checkpointer.save("model_0001", epoch=1)
    monkeypatch.undo()

    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_best.pth"]
    assert (tmp_path / "last_checkpoint").read_text() == "model_best.pth"
    restored = tiny(seed=9)
    extra = Checkpointer(restored, str(tmp_path)).resume_or_load("", resume=True)
    assert extra["epoch"] == 0
    assert states_equal(restored.state_dict(), good)


def test_failed_pointer_write_keeps_old_pointer(tmp_path, monkeypatch):
    model = tiny(seed=0)
    checkpointer = Checkpointer(model, str(tmp_path))
    checkpointer.save("model_0000", epoch=0)

    real_replace = os.replace

    def fail_for_pointer(src, dst, *args, **kwargs):
        if os.path.basename(dst) == "last_checkpoint":
            raise OSError("killed before the pointer moved (simulated)")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", fail_for_pointer)
    with pytest.raises(OSError, match="simulated"):
        checkpointer.save("model_0001", epoch=1)
    monkeypatch.undo()

    assert tmp_leftovers(tmp_path) == []
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000.pth"
    for name in ("model_0000.pth", "model_0001.pth"):  # the new file is complete too
        assert (
            torch.load(tmp_path / name, weights_only=True)["model"].keys()
            == model.state_dict().keys()
        )


def test_hard_kill_during_save_leaves_previous_checkpoint(tmp_path):
    """A real kill (os._exit, no cleanup) in the middle of writing."""
    script = textwrap.dedent(f"""
        import os, sys, torch
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import lastreid
        from lastreid.checkpoint import Checkpointer
        from test_checkpoint import tiny
        model = tiny(seed=0)
        checkpointer = Checkpointer(model, {str(tmp_path)!r})
        checkpointer.save("model_final", epoch=0)
        real_save = torch.save
        def killed(obj, f, *a, **k):
            real_save(obj, f, *a, **k)
            f.flush()
            f.truncate(f.tell() // 3)
            os._exit(9)
        torch.save = killed
        with torch.no_grad():
            model.heads.weight.mul_(-1)
        checkpointer.save("model_final", epoch=1)
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 9, done.stderr

    # The killed writer's temporary file stays behind, but it is never taken for a
    # checkpoint: the pointer and the file it names are the previous, complete ones.
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"
    restored = tiny(seed=9)
    checkpointer = Checkpointer(restored, str(tmp_path))
    assert checkpointer.get_all_checkpoint_files() == [str(tmp_path / "model_final.pth")]
    extra = checkpointer.resume_or_load("", resume=True)
    assert extra["epoch"] == 0
    assert states_equal(restored.state_dict(), tiny(seed=0).state_dict())


def test_save_atomic_helper(tmp_path):
    path = tmp_path / "x.pth"
    save_atomic({"a": torch.arange(3)}, path)
    save_atomic({"a": torch.arange(4)}, path)
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.arange(4))
    assert tmp_leftovers(tmp_path) == []


# Untrusted and corrupt files -------------------------------------------------------------


def test_untrusted_pickle_refused_unless_trusted(tmp_path, caplog):
    source = tiny(seed=0)
    path = tmp_path / "needs_pickle.pth"
    torch.save({"model": source.state_dict(), "note": Arbitrary(42)}, path)

    with pytest.raises(UntrustedCheckpointError) as info:
        Checkpointer(tiny(seed=1)).load(str(path))
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert str(path) in message and "MODEL.TRUST_CHECKPOINTS True" in message
    assert "Arbitrary" in message and "\n" not in message

    model = tiny(seed=1)
    with caplog.at_level(logging.WARNING, logger="lastreid.checkpoint"):
        extra = Checkpointer(model, trust=True).load(str(path))
    assert isinstance(extra["note"], Arbitrary) and extra["note"].value == 42
    assert states_equal(model.state_dict(), source.state_dict())
    assert "weights_only=False" in caplog.text


def _truncated_zip(path):
    torch.save({"model": tiny(seed=0).state_dict()}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _truncated_legacy(path):
    torch.save({"model": tiny(seed=0).state_dict()}, path, _use_new_zipfile_serialization=False)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])


@pytest.mark.parametrize(
    "damage",
    [
        _truncated_zip,
        _truncated_legacy,
        lambda path: path.write_bytes(b""),
        lambda path: path.write_text("not a checkpoint at all"),
    ],
)
def test_corrupt_file_gives_one_line_error_naming_it(tmp_path, damage):
    path = tmp_path / "model_0003.pth"
    damage(path)
    for trust in (False, True):
        with pytest.raises(CorruptCheckpointError) as info:
            Checkpointer(tiny(seed=1), trust=trust).load(str(path))
        assert str(path) in str(info.value) and "\n" not in str(info.value)


# Classifier and the key report -----------------------------------------------------------


def test_load_classifier_false_drops_heads_weight(tmp_path):
    source = tiny(seed=0)
    Checkpointer(source, str(tmp_path)).save("model_final")
    model = tiny(seed=1)
    before = model.heads.weight.detach().clone()
    checkpointer = Checkpointer(model, load_classifier=False)
    checkpointer.load(str(tmp_path / "model_final.pth"))
    report = checkpointer.last_load_report
    assert report.dropped == ["heads.weight"]
    assert report.reasons["heads.weight"] == CLASSIFIER_NOT_LOADED
    assert CLASSIFIER_NOT_LOADED in report.summary()
    assert torch.equal(model.heads.weight, before)
    assert torch.equal(model.backbone.conv1.weight, source.backbone.conv1.weight)
    assert backbone_loaded(report)


def test_classifier_with_other_class_count_reported_as_dropped(tmp_path, caplog):
    Checkpointer(tiny(seed=0, num_classes=5), str(tmp_path)).save("model_final")
    model = tiny(seed=1, num_classes=3)
    checkpointer = Checkpointer(model)
    with caplog.at_level(logging.INFO, logger="lastreid.checkpoint"):
        checkpointer.load(str(tmp_path / "model_final.pth"))
    report = checkpointer.last_load_report
    assert report.dropped == ["heads.weight"]
    assert report.reasons["heads.weight"] == "shape mismatch"
    assert report.shapes["heads.weight"] == ((5, 4), (3, 4))
    assert report.missing == ["heads.weight"]
    assert backbone_loaded(report)
    assert "heads.weight" in caplog.text and "(5, 4)" in caplog.text


def test_backbone_loaded_false_without_backbone_keys(tmp_path):
    source = tiny(seed=0)
    heads_only = tmp_path / "heads_only.pth"
    torch.save(
        {"model": {k: v for k, v in source.state_dict().items() if k.startswith("heads.")}},
        heads_only,
    )
    checkpointer = Checkpointer(tiny(seed=1))
    checkpointer.load(str(heads_only))
    report = checkpointer.last_load_report
    assert not backbone_loaded(report)
    assert "backbone.conv1.weight" in report.missing
    assert "heads.weight" in report.loaded

    # One backbone buffer short is not a loaded backbone either.
    partial = tmp_path / "partial.pth"
    state = source.state_dict()
    del state["backbone.bn1.running_var"]
    torch.save({"model": state}, partial)
    checkpointer.load(str(partial))
    assert not backbone_loaded(checkpointer.last_load_report)
    assert checkpointer.last_load_report.missing == ["backbone.bn1.running_var"]
    assert not backbone_loaded(None)


def test_unknown_keys_and_module_prefix_in_fastreid_file(tmp_path):
    source = tiny(seed=0)
    state = {"module." + k: v for k, v in source.state_dict().items()}
    state["module.heads.extra"] = torch.zeros(2)
    path = tmp_path / "ddp.pth"
    torch.save({"model": state}, path)
    model = tiny(seed=1)
    checkpointer = Checkpointer(model)
    checkpointer.load(str(path))
    report = checkpointer.last_load_report
    assert report.dropped == ["heads.extra"] and report.missing == []
    assert states_equal(model.state_dict(), source.state_dict())


# The conversion tool ---------------------------------------------------------------------


def test_convert_tool_writes_weights_only_fastreid_file(reference, tmp_path, capsys):
    ref_model, path = reference
    spec = importlib.util.spec_from_file_location(
        "convert_reference_checkpoint", REPO / "tools" / "convert_reference_checkpoint.py"
    )
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)

    out = tmp_path / "bot_fastreid.pth"
    assert tool.main([str(path), "-o", str(out)]) == 0
    data = torch.load(out, map_location="cpu", weights_only=True)
    expected = convert_reference_state_dict(ref_model.state_dict())
    assert states_equal(data["model"], expected)
    printed = capsys.readouterr().out
    assert f"{len(expected)} keys converted" in printed
    assert "not converted: none" in printed
    assert f"Loaded {len(expected)}/{len(expected)}" in printed
    assert "use_torchvision_stem" in printed

    not_reference = tmp_path / "plain.pth"
    torch.save({"model": tiny(seed=0).state_dict()}, not_reference)
    with pytest.raises(CheckpointError, match="key names"):
        tool.main([str(not_reference), str(tmp_path / "x.pth")])  # the old positional output
    assert not (tmp_path / "x.pth").exists()


def test_classifier_of_a_model_without_classes_is_dropped_quietly(tmp_path, caplog):
    # Evaluation builds the model with 0 classes: its (0, dim) classifier takes nothing.
    Checkpointer(tiny(seed=0, num_classes=5), str(tmp_path)).save("model_final")
    checkpointer = Checkpointer(tiny(seed=1, num_classes=0))
    with caplog.at_level(logging.INFO, logger="lastreid.checkpoint"):
        checkpointer.load(str(tmp_path / "model_final.pth"))
    report = checkpointer.last_load_report
    assert report.dropped == ["heads.weight"] and report.missing == [] and report.shapes == {}
    assert report.reasons["heads.weight"] == CLASSIFIER_UNUSED
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert backbone_loaded(report)
