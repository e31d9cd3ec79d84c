"""lastreid.precision: which path a config resolves to (LASTREID_NATIVE_BF16 included), the
CPU training step under bf16 autocast, channels-last models, float32 evaluation features,
bf16 vs fp32 agreement. The tests that run bf16 arithmetic skip on a CPU without native
bf16 (conftest.needs_native_bf16)."""

import copy
import logging
import os

from lastreid import precision, train_steps
from lastreid.config import add_lastreid_config
from lastreid.engine import Trainer
from lastreid.fastreid_internals import batch_iterator, step_runner
from lastreid.features import FeatureExtractor
from lastreid.startup import build_cfg

import pytest
import torch
import torch.nn.functional as F
from conftest import needs_native_bf16
from fastreid.config import get_cfg
from fastreid.engine.train_loop import SimpleTrainer
from fastreid.utils.events import EventStorage

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "LaST", "bagtricks_R50.yml")


@pytest.fixture
def native(monkeypatch):
    """native(True/False): pretend the CPU does / does not have native bf16."""

    def set_native(value):
        monkeypatch.setattr(
            precision,
            "cpu_bf16_support",
            lambda: (value, "test CPU " + ("with" if value else "without") + " bf16"),
        )

    return set_native


def plain_cfg(device="cpu", channels_last="auto", bf16="auto"):
    cfg = add_lastreid_config(get_cfg())
    cfg.MODEL.DEVICE = device
    cfg.MODEL.CHANNELS_LAST, cfg.MODEL.CPU_BF16 = channels_last, bf16
    return cfg


@pytest.fixture
def small_cfg(synthetic_root, fast_cpu_opts, tmp_path, monkeypatch):
    """small_cfg(channels_last, bf16, extra): ResNet-18 at 64x32 on the tiny synthetic LaST
    (24 training images, batches of 8)."""
    monkeypatch.setenv("FASTREID_DATASETS", str(synthetic_root))

    def make(channels_last="on", bf16="on", extra=()):
        # fmt: off
        opts = fast_cpu_opts + [
            "SOLVER.IMS_PER_BATCH", "8",
            "SOLVER.MAX_EPOCH", "1",
            "MODEL.CHANNELS_LAST", channels_last,
            "MODEL.CPU_BF16", bf16,
            "MODEL.HEADS.NUM_CLASSES", "6",
            "TEST.IMS_PER_BATCH", "8",
            "OUTPUT_DIR", str(tmp_path),
        ]
        # fmt: on
        return build_cfg(CONFIG, opts + list(extra))

    return make


@pytest.mark.parametrize(
    "has_bf16, cl, bf, training, expected",
    [
        (True, "auto", "auto", True, (True, True)),
        (True, "auto", "auto", False, (True, False)),  # evaluation: float32 under auto
        (False, "auto", "auto", True, (False, False)),
        (True, "off", "off", True, (False, False)),
        (False, "on", "on", True, (True, True)),
        (False, "on", "on", False, (True, True)),  # asked for explicitly: bf16 inference
        (True, "on", "off", True, (True, False)),
        (False, "off", "on", True, (False, True)),
        (True, "AUTO", "Off", True, (True, False)),
    ],
)
def test_cpu_resolution(native, has_bf16, cl, bf, training, expected):
    native(has_bf16)
    fast = precision.resolve(plain_cfg("cpu", cl, bf), log=False, training=training)
    assert (fast.channels_last, fast.bf16) == expected
    assert ("forced on without native support" in fast.reason) == (expected[1] and not has_bf16)


@pytest.mark.parametrize("has_bf16", [True, False])
def test_cuda_resolution(native, has_bf16):
    """bf16 never applies on CUDA (fp16 AMP is SOLVER.AMP); channels-last only when on."""
    native(has_bf16)
    for bf in ("auto", "on"):
        fast = precision.resolve(plain_cfg("cuda", "auto", bf), log=False)
        assert not fast.channels_last and not fast.bf16
        fast = precision.resolve(plain_cfg("cuda:0", "on", bf), log=False)
        assert fast.channels_last and not fast.bf16
        assert "MODEL.CPU_BF16 is for the CPU" in fast.reason


def test_resolve_logs_one_line(native, caplog):
    native(True)
    with caplog.at_level(logging.INFO, logger="lastreid.precision"):
        precision.resolve(plain_cfg(), training=True)
        precision.resolve(plain_cfg(), log=False)
        precision.resolve(plain_cfg())
    lines = [r.getMessage() for r in caplog.records if r.name == "lastreid.precision"]
    assert len(lines) == 2 and not any("\n" in line for line in lines)
    assert lines[0].startswith("Precision path (training): channels-last + bf16 autocast")
    assert "MODEL.CPU_BF16=auto" in lines[0]
    assert lines[1].startswith("Precision path (evaluation): channels-last (")
    assert "evaluation in float32 under auto" in lines[1] and "MODEL.CPU_BF16 on" in lines[1]


@pytest.mark.parametrize("key", ["CHANNELS_LAST", "CPU_BF16"])
def test_invalid_value_names_the_key(key):
    cfg = plain_cfg()
    cfg.MODEL[key] = "fast"
    with pytest.raises(ValueError) as err:
        precision.resolve(cfg, log=False)
    message = str(err.value)
    assert "MODEL." + key in message and "'fast'" in message and "\n" not in message


def test_cpu_capability_probe_agrees_with_proc_cpuinfo(monkeypatch):
    """torch's probe and the /proc/cpuinfo fallback give the same answer here."""
    if not os.path.isfile("/proc/cpuinfo"):
        pytest.skip("no /proc/cpuinfo")
    probe = precision.cpu_bf16_probe.__wrapped__
    with_torch = probe()
    monkeypatch.delattr(torch.cpu, "get_capabilities", raising=False)
    fallback = probe()
    assert isinstance(with_torch[0], bool) and with_torch[0] == fallback[0]
    assert "/proc/cpuinfo" in fallback[1]


def test_native_bf16_variable_overrides_the_probe(monkeypatch):
    """LASTREID_NATIVE_BF16=0/1 answers as a CPU without / with native bf16, and so decides
    what auto resolves to; unset, the CPU's probe answers; another value is one clear error."""
    from lastreid.errors import ConfigError

    for value, native in (("0", False), ("1", True)):
        monkeypatch.setenv("LASTREID_NATIVE_BF16", value)
        supported, how = precision.cpu_bf16_support()
        assert supported is native and "LASTREID_NATIVE_BF16=" + value in how
        fast = precision.resolve(plain_cfg(), log=False, training=True)
        assert (fast.channels_last, fast.bf16) == (native, native)
    monkeypatch.delenv("LASTREID_NATIVE_BF16")
    assert precision.cpu_bf16_support() == precision.cpu_bf16_probe()
    monkeypatch.setenv("LASTREID_NATIVE_BF16", "yes")
    expected = r"^LASTREID_NATIVE_BF16 is 'yes': expected 0 .* or unset \(ask the CPU\)$"
    with pytest.raises(ConfigError, match=expected):
        precision.cpu_bf16_support()


def test_prepare_model_channels_last(small_cfg):
    """Trainer.build_model (training, evaluation, evaluate_weights) follows the switch."""
    for switch, expected in (("on", True), ("off", False)):
        cfg = small_cfg(channels_last=switch)
        weight = Trainer.build_model(cfg).backbone.conv1.weight
        assert weight.is_contiguous(memory_format=torch.channels_last) == expected
        assert weight.is_contiguous() != expected


def _record_activations(model):
    """Records the dtype and layout of the first convolution's output on each call."""
    seen = []

    def hook(module, inputs, output):
        seen.append((output.dtype, output.is_contiguous(memory_format=torch.channels_last)))

    return seen, model.backbone.conv1.register_forward_hook(hook)


@needs_native_bf16
def test_cpu_trainer_step_runs_in_bf16_and_trains(small_cfg):
    cfg = small_cfg()
    trainer = Trainer(cfg)
    inner = step_runner(trainer)
    assert type(inner) is train_steps.CpuTrainer and inner.fast_path.bf16
    model = inner.model
    seen, handle = _record_activations(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with EventStorage(0) as storage:
        inner.iter = 0
        inner.run_step()
    handle.remove()
    assert seen == [(torch.bfloat16, True)]
    assert all(p.dtype == torch.float32 for p in model.parameters())
    changed = [n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert "backbone.conv1.weight" in changed and len(changed) > len(before) // 2
    assert storage.history("total_loss").latest() > 0
    assert "losses" not in vars(model)  # the float32-loss override is gone after the step


def test_cpu_trainer_reuses_the_data_loader_iterator():
    """Replacing SimpleTrainer starts no second pass over the loader (no new workers)."""

    class Loader:
        iters = 0

        def __iter__(self):
            Loader.iters += 1
            return iter(range(10))

    model = torch.nn.Linear(2, 2)
    old = SimpleTrainer(model, Loader(), torch.optim.SGD(model.parameters(), lr=0.1), None)
    new = train_steps.CpuTrainer.from_trainer(old, precision.FP32)
    assert Loader.iters == 1 and batch_iterator(new) is batch_iterator(old)
    assert (
        new.model is model and new.optimizer is old.optimizer and new.data_loader is old.data_loader
    )


@needs_native_bf16
def test_losses_run_in_float32(small_cfg, monkeypatch):
    """The triplet / cross-entropy inputs are float32 even though the forward is bf16."""
    trainer = Trainer(small_cfg())
    net = step_runner(trainer).model
    seen = []
    original = type(net).losses

    def spy(self, outputs, targets):
        seen.append({k: v.dtype for k, v in outputs.items()})
        seen.append(torch.is_autocast_enabled("cpu"))
        return original(self, outputs, targets)

    monkeypatch.setattr(type(net), "losses", spy)
    with EventStorage(0):
        step_runner(trainer).iter = 0
        step_runner(trainer).run_step()
    assert set(seen[0].values()) == {torch.float32} and seen[1] is False


def direct_map(feats, pids, camids, num_query):
    """mAP (%) written out: cosine distance in float64, the gallery items of the query's
    identity and camera dropped, queries without a match skipped (the market protocol)."""
    f = F.normalize(feats.double(), dim=1)
    q_f, g_f, g_pids, g_cams = f[:num_query], f[num_query:], pids[num_query:], camids[num_query:]
    aps = []
    for i in range(num_query):
        keep = ~((g_pids == pids[i]) & (g_cams == camids[i]))
        order = torch.argsort(1 - g_f[keep] @ q_f[i], stable=True)
        hits = (g_pids[keep] == pids[i])[order]
        ranks = torch.nonzero(hits).flatten().double() + 1
        if len(ranks):
            aps.append((torch.arange(1, len(ranks) + 1) / ranks).mean().item())
    return 100 * sum(aps) / len(aps)


@needs_native_bf16
def test_evaluation_features_are_float32_and_ranked_outside_autocast(small_cfg):
    from lastreid.evaluation import BlockedReidEvaluator

    cfg = small_cfg(extra=["DATASETS.TESTS", '("LaST",)'])  # tiny LaSTVal: < 10 gallery items
    seen = {"outputs": set(), "autocast_in_evaluate": None, "items": []}

    class Spy(BlockedReidEvaluator):
        def process(self, inputs, outputs):
            seen["outputs"].add(outputs.dtype)
            seen["items"].append((outputs, inputs["targets"], inputs["camids"]))
            return super().process(inputs, outputs)

        def evaluate(self):
            seen["autocast_in_evaluate"] = torch.is_autocast_enabled("cpu")
            return super().evaluate()

    class SpyTrainer(Trainer):
        @classmethod
        def build_evaluator(cls, cfg, dataset_name, output_dir=None):
            loader, seen["num_query"] = cls.build_test_loader(cfg, dataset_name)
            num_items = len(loader.dataset)
            return loader, Spy(cfg, seen["num_query"], output_dir, num_items=num_items)

    model = SpyTrainer.build_model(cfg)
    activations, handle = _record_activations(model)
    results = SpyTrainer.test(cfg, model)
    handle.remove()
    assert seen["outputs"] == {torch.float32} and seen["autocast_in_evaluate"] is False
    assert activations and {dtype for dtype, _ in activations} == {torch.bfloat16}
    # The mAP is the one of the bf16 features the evaluator was handed, computed directly.
    feats, pids, camids = (torch.cat(part) for part in zip(*seen["items"]))
    expected = direct_map(feats, pids, camids, seen["num_query"])
    assert results["mAP"] == pytest.approx(expected, abs=1e-3)
    assert model.training  # Trainer.test leaves the model's mode as it found it


@needs_native_bf16
def test_default_evaluation_equals_cpu_bf16_off_exactly(small_cfg, native):
    """On a CPU with native bf16 (pretended: the probe is patched) the default evaluation
    gives exactly the MODEL.CPU_BF16 off numbers; "on" still takes the bf16 path."""
    native(True)
    results, features = {}, {}
    images = torch.rand(2, 3, 64, 32) * 255
    for bf in ("auto", "off", "on"):
        cfg = small_cfg(channels_last="off", bf16=bf, extra=["DATASETS.TESTS", '("LaST",)'])
        torch.manual_seed(0)
        model = Trainer.build_model(cfg)
        if bf != "on":
            results[bf] = Trainer.test(cfg, model)
        features[bf] = FeatureExtractor(cfg, model=model.eval(), progress=False).forward(images)
    assert results["auto"] == results["off"]
    assert torch.equal(features["auto"], features["off"])
    assert not torch.equal(features["on"], features["off"])  # the switch does something


@needs_native_bf16
def test_bf16_features_agree_with_fp32(small_cfg):
    """One seeded model, a handful of images: bf16 + channels-last vs plain fp32."""
    cfg = small_cfg()
    torch.manual_seed(0)
    model = Trainer.build_model(cfg).eval()
    loader, _ = Trainer.build_test_loader(cfg, "LaSTVal")
    images = next(iter(loader))["images"]
    fp32_model = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    with torch.no_grad():
        ref = fp32_model({"images": images.clone()})
        fast = precision.for_inference(model, precision.resolve(cfg, log=False))
        out = fast({"images": images.clone()})
        with precision.autocast(precision.resolve(cfg, log=False)):
            raw = model({"images": images.clone()})
    assert ref.dtype == out.dtype == torch.float32 and raw.dtype == torch.bfloat16
    assert len(images) >= 4
    assert F.cosine_similarity(out, ref).min().item() >= 0.99
    assert not torch.equal(out, ref)  # it did take the bf16 path


def _randomize_batchnorms(model, seed=0):
    """Running statistics and affine parameters away from their initial 0 / 1, so that
    folding them is not the identity."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=gen) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=gen) - 0.5)


def test_fold_batchnorm_keeps_the_eval_function(small_cfg):
    cfg = small_cfg(channels_last="off", bf16="off")
    torch.manual_seed(0)
    model = Trainer.build_model(cfg).eval()
    _randomize_batchnorms(model)
    backbone_bns = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.backbone.modules())
    folded = copy.deepcopy(model)
    assert (
        precision.fold_batchnorm_(folded) == backbone_bns == 1 + 8 * 2 + 3
    )  # R18: stem, blocks, downsample
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.backbone.modules())
    images = torch.rand(4, 3, 64, 32) * 255
    with torch.no_grad():
        ref, out = model({"images": images.clone()}), folded({"images": images.clone()})
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-4)


def test_bf16_inference_model_is_a_folded_copy(small_cfg):
    cfg = small_cfg(channels_last="on", bf16="on")
    model = Trainer.build_model(cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    infer = precision.for_inference(model, precision.resolve(cfg, log=False))
    convs = [m for m in infer.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.weight.dtype == torch.bfloat16 for c in convs)
    assert all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    # (the head's BNNeck is a BatchNorm2d on pooled features, with no convolution to fold into)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in infer.model.backbone.modules())
    assert not any(p.requires_grad for p in infer.parameters()) and not infer.training
    # The model itself is untouched: still training, float32, its BatchNorms in place.
    assert model.training
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    # The fp32 path runs the model itself.
    assert (
        precision.for_inference(model, precision.resolve(small_cfg("off", "off"), log=False))
        is model
    )
