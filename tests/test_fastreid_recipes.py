"""fast-reid's AGW / SBS / MGN recipes (configs/fastreid/ and their configs/LaST/ files) on
our CPU path: non-local blocks, GeM / GeMP pooling and CircleSoftmax train in float32 and
under bf16 autocast (where the CPU has native bf16) and fold for inference; AutoAugment's
operations run on this Pillow; the frozen-backbone warm-up follows the run's iteration
across --resume; fastreid's MGN no longer normalises a flip-averaged batch twice."""

import copy
import os
import random

from lastreid import precision
from lastreid.engine import Trainer
from lastreid.modeling import build_model
from lastreid.startup import build_cfg

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import needs_native_bf16
from fastreid.data.transforms.autoaugment import AutoAugment
from fastreid.layers import Non_local
from fastreid.layers.pooling import GeneralizedMeanPooling, GeneralizedMeanPoolingP
from fastreid.utils.events import EventStorage
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAST = os.path.join(REPO, "configs", "LaST")
SMALL = ["MODEL.BACKBONE.PRETRAIN", "False", "MODEL.DEVICE", "cpu", "MODEL.HEADS.NUM_CLASSES", "4"]


def cfg_of(name, *opts):
    return build_cfg(os.path.join(LAST, name + ".yml"), SMALL + list(opts))


RECIPES = [("AGW_R50", GeneralizedMeanPooling), ("SBS_R50", GeneralizedMeanPoolingP)]


def _train_step(cfg, name, pool):
    """The seeded model of cfg after one training forward / backward of 8 images on cfg's
    precision path (its components checked first); returns the model and the images."""
    torch.manual_seed(0)
    model = build_model(cfg)
    assert sum(isinstance(m, Non_local) for m in model.modules()) == 5  # 2 in layer2, 3 in layer3
    assert isinstance(model.heads.pool_layer, pool)
    if name == "SBS_R50":
        assert type(model.heads.cls_layer).__name__ == "CircleSoftmax"
        assert cfg.MODEL.HEADS.NECK_FEAT == "after"
    images = torch.rand(8, 3, 64, 32) * 255
    targets = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    with EventStorage(), precision.autocast(precision.resolve(cfg, training=True)):
        losses = model({"images": images.clone(), "targets": targets})
    assert set(losses) == {"loss_cls", "loss_triplet"}
    sum(losses.values()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    return model.eval(), images


@pytest.mark.parametrize("name, pool", RECIPES)
def test_agw_and_sbs_components_train_and_fold(name, pool):
    """ResNet-50 (the depth with non-local blocks) at 64x32 in float32: a training step with
    finite losses and gradients; each non-local block's output convolution + BatchNorm folds
    too, leaving the test feature unchanged to float rounding."""
    model, images = _train_step(cfg_of(name, "MODEL.CPU_BF16", "off"), name, pool)
    folded = copy.deepcopy(model)
    precision.fold_batchnorm_(folded)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.backbone.modules())
    with torch.no_grad():
        ref = model(images.clone())
        torch.testing.assert_close(folded(images.clone()), ref, rtol=1e-4, atol=1e-4)
    assert ref.shape == (8, 2048)


@needs_native_bf16
@pytest.mark.parametrize("name, pool", RECIPES)
def test_agw_and_sbs_components_train_in_bf16_and_fold(name, pool):
    """The same on the bf16 path: a bf16 training step with finite losses and gradients,
    then float32 features that the folded bf16 copy matches."""
    cfg = cfg_of(name, "MODEL.CPU_BF16", "on", "MODEL.CHANNELS_LAST", "on")
    model, images = _train_step(cfg, name, pool)
    with torch.no_grad():
        ref = model(images.clone())
        infer = precision.for_inference(model, precision.resolve(cfg))
        out = infer(images.clone())
    assert ref.shape == out.shape == (8, 2048)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in infer.model.backbone.modules())
    assert F.cosine_similarity(out, ref).min() > 0.99


def test_autoaugment_operations_run_on_this_pillow():
    """SBS's AutoAugment: every operation of every sub-policy, forced on, on an RGB crop."""
    random.seed(0)
    image = Image.fromarray((np.random.default_rng(0).random((64, 32, 3)) * 255).astype("uint8"))
    augment = AutoAugment()
    ran = 0
    for sub_policy in augment.policy:
        for op in sub_policy:
            forced = copy.copy(op)
            forced.prob = 1.0
            out = forced(image)
            assert out.size == image.size and out.mode == "RGB"
            ran += 1
    assert ran == 2 * len(augment.policy) > 0


def test_fastreid_mgn_leaves_the_batch_alone():
    """fastreid's MGN normalised its input in place, so the flip of fastreid's
    flip-averaged evaluation was normalised twice (lastreid.compat, fix 5). (128x64: its
    torch.chunk makes fewer than 3 stripes of a map 4 rows high, from 64x32 inputs.)"""
    cfg = cfg_of("mgn_fastreid_R50", "INPUT.SIZE_TEST", "[128, 64]")
    model = build_model(cfg).eval()
    images = torch.rand(2, 3, 128, 64) * 255
    before = images.clone()
    with torch.no_grad():
        out = model({"images": images})
    assert torch.equal(images, before) and out.shape == (2, 8 * 256)


def _backbone_state(trainer):
    return {k: v.clone() for k, v in trainer.model.backbone.state_dict().items()}


def test_frozen_backbone_warm_up_follows_the_run_across_resume(
    synthetic_root, tmp_path, monkeypatch
):
    """SBS's FREEZE_ITERS on the tiny LaST (3 steps per epoch): frozen for exactly the first
    epoch; a run resumed after it trains the backbone at once (fastreid's own optimizer froze
    it again for FREEZE_ITERS steps after every resume). Its cosine schedule (no delay here)
    anneals from BASE_LR to ETA_MIN_LR over the one-epoch run."""
    from conftest import FAST_CPU_OPTS

    monkeypatch.setenv("FASTREID_DATASETS", str(synthetic_root))
    # fmt: off
    opts = FAST_CPU_OPTS + [
        "SOLVER.IMS_PER_BATCH", "8", "DATALOADER.NUM_INSTANCE", "2", "SOLVER.FREEZE_ITERS", "3",
        "SOLVER.WARMUP_ITERS", "0", "SOLVER.DELAY_EPOCHS", "0", "TEST.EVAL_PERIOD", "100",
        "OUTPUT_DIR", str(tmp_path),
    ]
    # fmt: on
    config = os.path.join(LAST, "SBS_R50.yml")
    first = Trainer(build_cfg(config, opts + ["SOLVER.MAX_EPOCH", "1"]))
    first.resume_or_load(resume=False)
    before, heads_before = _backbone_state(first), first.model.heads.weight.clone()
    first.train()
    assert first.iters_per_epoch == 3
    after_first = _backbone_state(first)
    assert all(torch.equal(before[k], after_first[k]) for k in before)  # frozen throughout
    assert not torch.equal(first.model.heads.weight, heads_before)  # the head trained
    assert first.cfg.SOLVER.SCHED == "CosineAnnealingLR"
    eta_min = first.cfg.SOLVER.ETA_MIN_LR
    assert all(g["lr"] == pytest.approx(eta_min) for g in first.optimizer.param_groups)

    resumed = Trainer(build_cfg(config, opts + ["SOLVER.MAX_EPOCH", "2"]))
    resumed.resume_or_load(resume=True)
    assert resumed.start_epoch == 1
    resumed.train()
    after = _backbone_state(resumed)
    changed = [
        k for k in after if k.endswith("weight") and not torch.equal(after[k], after_first[k])
    ]
    assert changed  # the backbone trained from the first resumed step on
