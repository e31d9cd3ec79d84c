"""The paper's other LaST baselines (lastreid.modeling: PCBHead, HPMHead, PaperMGN over
PartBaseline): output shapes in training and eval mode, the test feature's dimension and
normalisation, and every loss term against a direct computation written out here with torch
ops on a tiny batch; the real configs' test feature dimensions; their BatchNorm folding."""

import copy
import os

from lastreid import precision
from lastreid.modeling import build_model, feature_dim
from lastreid.modeling.hpm import HPMHead
from lastreid.modeling.paper_mgn import MGNBranches
from lastreid.modeling.part_baseline import PartBaseline
from lastreid.modeling.parts import pool_stripes
from lastreid.modeling.pcb import PCBHead
from lastreid.startup import build_cfg

import pytest
import torch
import torch.nn.functional as F
from conftest import needs_native_bf16
from fastreid.utils.events import EventStorage
from torch import nn

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAST = os.path.join(REPO, "configs", "LaST")
EPS, MARGIN = 0.1, 0.3
LOSS_KWARGS = {
    "loss_names": ("CrossEntropyLoss", "TripletLoss"),
    "ce": {"eps": EPS, "alpha": 0.2, "scale": 1.0},
    "tri": {"margin": MARGIN, "norm_feat": False, "hard_mining": True, "scale": 1.0},
}
TARGETS = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])  # 4 identities x 2 images
CLASSES = 5


# The direct computation: every formula written out with plain torch ops. -------------------


def smoothed_ce(logits, targets, eps=EPS):
    """fastreid's label smoothing: 1 - eps on the true class, eps / (K - 1) on the others."""
    k = logits.shape[1]
    soft = torch.full_like(logits, eps / (k - 1))
    soft[torch.arange(len(targets)), targets] = 1 - eps
    return -(soft * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()


def batch_hard_triplet(x, targets, margin=MARGIN):
    n = x.shape[0]
    d = torch.stack([torch.stack([(x[i] - x[j]).pow(2).sum() for j in range(n)]) for i in range(n)])
    d = d.clamp(min=1e-12).sqrt()
    same = targets[:, None] == targets[None, :]
    hardest_pos = torch.where(same, d, torch.zeros_like(d)).max(dim=1).values
    hardest_neg = torch.where(same, torch.full_like(d, float("inf")), d).min(dim=1).values
    return torch.relu(hardest_pos - hardest_neg + margin).mean()


def conv1x1_bn_relu(vectors, block, train):
    """A ReductionBlock on (N, C) vectors: matmul, BatchNorm with the batch's (biased)
    statistics in training or the running ones in eval, ReLU."""
    conv, bn = block[0], block[1]
    z = vectors @ conv.weight[:, :, 0, 0].t()
    if train:
        mean, var = z.mean(dim=0), z.var(dim=0, unbiased=False)
    else:
        mean, var = bn.running_mean, bn.running_var
    return torch.relu((z - mean) / torch.sqrt(var + bn.eps) * bn.weight + bn.bias)


def linear(x, fc):
    return x @ fc.weight.t() + (0 if fc.bias is None else fc.bias)


def losses_of(head, features, targets=TARGETS):
    model = PartBaseline(
        backbone=nn.Identity(),
        heads=head,
        pixel_mean=[0.0, 0.0, 0.0],
        pixel_std=[1.0, 1.0, 1.0],
        loss_kwargs=LOSS_KWARGS,
    )
    with EventStorage():
        return model.losses(head(features, targets), targets)


def assert_terms(got, expected):
    assert sorted(got) == sorted(expected)
    for name, value in expected.items():
        torch.testing.assert_close(got[name], value, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("height, stripes", [(16, 3), (16, 2), (24, 6), (16, 8), (4, 3), (4, 8)])
def test_stripe_pooling_is_the_paper_codes_adaptive_pooling(height, stripes):
    """The paper's code pools stripes with AdaptiveAvgPool2d / AdaptiveMaxPool2d((n, 1));
    ours slices the same bins (ONNX exports slices at any height)."""
    x = torch.randn(2, 5, height, 3)
    torch.testing.assert_close(
        pool_stripes(x, stripes, "avg"), F.adaptive_avg_pool2d(x, (stripes, 1))
    )
    assert torch.equal(pool_stripes(x, stripes, "max"), F.adaptive_max_pool2d(x, (stripes, 1)))


# PCB ---------------------------------------------------------------------------------------


def test_pcb_losses_match_a_direct_computation():
    torch.manual_seed(0)
    head = PCBHead(feat_dim=6, num_classes=CLASSES, num_stripes=3, reduction_dim=4, dropout=0.0)
    features = torch.randn(8, 6, 6, 2)  # 3 stripes of 2 rows
    got = losses_of(head.train(), features)

    stripes = [features[:, :, 2 * s : 2 * s + 2].mean(dim=(2, 3)) for s in range(3)]
    # One reduction for all stripes: its BatchNorm's statistics cover every stripe.
    reduced = conv1x1_bn_relu(torch.cat(stripes), head.reduction, train=True).split(8)
    expected = {
        f"loss_cls_stripe_{s}": smoothed_ce(linear(reduced[s], head.classifiers[s]), TARGETS) / 3
        for s in range(3)
    }
    unit = torch.cat([v / v.norm(dim=1, keepdim=True) for v in stripes], dim=1)
    expected["loss_triplet"] = batch_hard_triplet(unit, TARGETS)
    assert_terms(got, expected)


def test_pcb_test_feature_is_the_unit_stripes_without_dropout():
    torch.manual_seed(0)
    head = PCBHead(feat_dim=6, num_classes=CLASSES, num_stripes=3, reduction_dim=4, dropout=0.5)
    features = torch.randn(8, 6, 6, 2)
    out = head.eval()(features)
    assert out.shape == (8, 3 * 6)
    stripes = out.reshape(8, 6, 3)  # channel-major, as the paper's code lays it out
    torch.testing.assert_close(stripes.norm(dim=1), torch.ones(8, 3))
    for s in range(3):
        v = features[:, :, 2 * s : 2 * s + 2].mean(dim=(2, 3))
        torch.testing.assert_close(stripes[:, :, s], v / v.norm(dim=1, keepdim=True))
    # In training, dropout reaches the classifiers and the triplet feature.
    train_out = head.train()(features, TARGETS)
    assert train_out["features"][""].shape == (8, 18)
    assert [v.shape for v in train_out["cls_outputs"].values()] == [(8, CLASSES)] * 3
    assert not torch.allclose(train_out["features"][""], out)


# HPM ---------------------------------------------------------------------------------------


def test_hpm_losses_match_a_direct_computation():
    torch.manual_seed(0)
    head = HPMHead(feat_dim=6, num_classes=CLASSES, bins=(1, 2), reduction_dim=4)
    features = torch.randn(8, 6, 4, 2)
    got = losses_of(head.train(), features)

    pooled = {
        "global": features.amax(dim=(2, 3)),
        "bin2_0": features[:, :, :2].amax(dim=(2, 3)),
        "bin2_1": features[:, :, 2:].amax(dim=(2, 3)),
    }
    expected = {}
    for i, (name, v) in enumerate(pooled.items()):
        feat = conv1x1_bn_relu(v, head.reductions[i], train=True)  # own BatchNorm per bin
        assert head.classifiers[i].bias is None
        expected[f"loss_cls_{name}"] = smoothed_ce(linear(feat, head.classifiers[i]), TARGETS)
        expected[f"loss_triplet_{name}"] = batch_hard_triplet(feat, TARGETS)  # summed, no mean
    assert_terms(got, expected)


def test_hpm_test_feature_concatenates_the_bins():
    torch.manual_seed(0)
    head = HPMHead(feat_dim=6, num_classes=CLASSES, bins=(1, 2, 4), reduction_dim=4)
    features = torch.randn(8, 6, 8, 2)
    head.train()(features, TARGETS)  # moves the running statistics off 0 / 1
    out = head.eval()(features)
    assert out.shape == (8, 7 * 4)
    rows = [(0, 8), (0, 4), (4, 8), (0, 2), (2, 4), (4, 6), (6, 8)]
    for i, (a, b) in enumerate(rows):
        v = features[:, :, a:b].amax(dim=(2, 3))
        expected = conv1x1_bn_relu(v, head.reductions[i], train=False)
        torch.testing.assert_close(out[:, 4 * i : 4 * i + 4], expected, rtol=1e-5, atol=1e-6)
    assert (out >= 0).all()  # not normalised: ReLU outputs


# The paper's MGN ---------------------------------------------------------------------------


def tiny_branches():
    """MGNBranches over toy stages: 'the rest of layer3' a 1x1 conv, 'layer4' a strided 3x3
    conv (so p1 halves the map and p2 / p3 keep it)."""
    torch.manual_seed(0)
    rest = nn.Sequential(nn.Conv2d(4, 4, 1, bias=False))
    layer4 = nn.Sequential(nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False))
    return MGNBranches(rest, layer4, feat_dim=6, num_classes=CLASSES, reduction_dim=4)


def branch_maps(head, x):
    """p1, p2, p3 of the toy branches, by hand from their own weights."""
    maps = []
    for branch, stride in ((head.p1, 2), (head.p2, 1), (head.p3, 1)):
        y = F.conv2d(x, branch[0][0].weight)
        maps.append(F.conv2d(y, branch[1][0].weight, stride=stride, padding=1))
    return maps


def mgn_vectors(head, x):
    p1, p2, p3 = branch_maps(head, x)
    assert p1.shape[2:] == (3, 2) and p2.shape[2:] == p3.shape[2:] == (6, 4)
    glob = [m.mean(dim=(2, 3)) for m in (p1, p2, p3)]
    halves = [p2[:, :, 3 * i : 3 * i + 3].mean(dim=(2, 3)) for i in range(2)]
    thirds = [p3[:, :, 2 * i : 2 * i + 2].mean(dim=(2, 3)) for i in range(3)]
    return glob + halves + thirds


def test_paper_mgn_losses_match_a_direct_computation():
    head = tiny_branches().train()
    x = torch.randn(8, 4, 6, 4)
    got = losses_of(head, x)

    names = ["p1", "p2", "p3", "p2_0", "p2_1", "p3_0", "p3_1", "p3_2"]
    feats = [
        conv1x1_bn_relu(v, r, train=True) for v, r in zip(mgn_vectors(head, x), head.reductions)
    ]
    expected = {
        f"loss_cls_{name}": smoothed_ce(linear(f, fc), TARGETS) / 8
        for name, f, fc in zip(names, feats, head.classifiers)
    }
    for name, f in zip(names[:3], feats[:3]):  # the triplet sees the 3 global features
        expected[f"loss_triplet_{name}"] = batch_hard_triplet(f, TARGETS) / 3
    assert_terms(got, expected)


def test_paper_mgn_test_feature_and_initialisation():
    head = tiny_branches()
    # The 8 reductions start from one initialisation, as the paper's code deep-copies one.
    first = head.reductions[0].state_dict()
    for r in head.reductions[1:]:
        assert all(torch.equal(first[k], v) for k, v in r.state_dict().items())
    x = torch.randn(8, 4, 6, 4)
    head.train()(x, TARGETS)
    out = head.eval()(x)
    assert out.shape == (8, 8 * 4)
    for i, (v, r) in enumerate(zip(mgn_vectors(head, x), head.reductions)):
        expected = conv1x1_bn_relu(v, r, train=False)
        torch.testing.assert_close(out[:, 4 * i : 4 * i + 4], expected, rtol=1e-5, atol=1e-6)


# The real configs --------------------------------------------------------------------------

# (config, test-feature dimension at ResNet-50, as the issue and the paper's code give them)
DIMENSIONS = [
    ("bagtricks_R50", 2048),
    ("mgn_R50", 2048),
    ("pcb_R50", 12288),
    ("hpm_R50", 3840),
    ("AGW_R50", 2048),
    ("SBS_R50", 2048),
    ("mgn_fastreid_R50", 2048),
]


def config_cfg(name, *opts):
    base = ["MODEL.BACKBONE.PRETRAIN", "False", "MODEL.DEVICE", "cpu"]
    return build_cfg(os.path.join(LAST, name + ".yml"), base + list(opts))


@pytest.mark.parametrize("name, dim", DIMENSIONS)
def test_each_config_gives_its_documented_test_feature(name, dim):
    cfg = config_cfg(name, "MODEL.CPU_BF16", "off")
    torch.manual_seed(0)
    model = build_model(cfg).train()
    assert feature_dim(cfg, model) == dim and model.training  # left in the mode it was in
    with torch.no_grad():
        out = model.eval()(torch.rand(2, 3, *cfg.INPUT.SIZE_TEST) * 255)
    assert out.shape == (2, dim) and torch.isfinite(out).all()


SMALL = [
    "MODEL.BACKBONE.DEPTH", "18x", "MODEL.BACKBONE.FEAT_DIM", "512",
    "INPUT.SIZE_TEST", "[64, 32]", "MODEL.HEADS.NUM_CLASSES", "4",
]  # fmt: skip
PART_MODELS = [
    ("mgn_R50", 8 + 3, 8 * 256),
    ("pcb_R50", 6 + 1, 6 * 512),
    ("hpm_R50", 15 + 15, 15 * 256),
]


def _eval_model_with_batchnorm_statistics(cfg):
    """The seeded model of cfg in eval mode, its running statistics away from 0 / 1."""
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize("name, terms, dim", PART_MODELS)
def test_part_model_folds_into_the_same_eval_function(name, terms, dim):
    """ResNet-18 at 64x32 in float32: the test feature is unchanged (to float rounding) when
    every BatchNorm that follows a convolution (backbone, deep-copied branch stages,
    reductions) is folded."""
    model = _eval_model_with_batchnorm_statistics(config_cfg(name, *SMALL, "MODEL.CPU_BF16", "off"))
    folded = copy.deepcopy(model)
    precision.fold_batchnorm_(folded)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    images = torch.rand(8, 3, 64, 32) * 255
    with torch.no_grad():
        ref = model(images.clone())
        torch.testing.assert_close(folded(images.clone()), ref, rtol=1e-4, atol=1e-4)
    assert ref.shape == (8, dim)


@needs_native_bf16
@pytest.mark.parametrize("name, terms, dim", PART_MODELS)
def test_part_model_trains_and_infers_in_bf16(name, terms, dim):
    """ResNet-18 at 64x32 on the bf16 path: one loss term per part in a training step, all
    finite; the folded bf16 inference copy close to the float32 test feature."""
    cfg = config_cfg(name, *SMALL, "MODEL.CPU_BF16", "on", "MODEL.CHANNELS_LAST", "on")
    torch.manual_seed(0)
    model = build_model(cfg)
    images = torch.rand(8, 3, 64, 32) * 255
    with EventStorage(), precision.autocast(precision.resolve(cfg, training=True)):
        losses = model({"images": images.clone(), "targets": TARGETS % 4})
    assert len(losses) == terms and all(torch.isfinite(v) for v in losses.values())

    model = _eval_model_with_batchnorm_statistics(cfg)
    with torch.no_grad():
        ref = model(images.clone())
        bf16 = precision.for_inference(model, precision.resolve(cfg))(images.clone())
    assert ref.shape == (8, dim) == bf16.shape
    assert F.cosine_similarity(bf16, ref).min() > 0.99


@needs_native_bf16
def test_one_column_conv_is_right_under_cpu_bf16_autocast():
    """A stride-2 3x3 convolution to a one-column map (the paper's MGN's p1 on 64x32 inputs)
    under bf16 autocast, guarded, against float32."""
    torch.manual_seed(0)
    conv = nn.Conv2d(64, 128, 3, stride=2, padding=1, bias=False)
    guarded = copy.deepcopy(conv)
    assert precision.guard_one_column_convs_(guarded) == 1
    assert guarded.state_dict().keys() == conv.state_dict().keys()
    for shape in ((16, 64, 4, 2), (16, 64, 8, 2), (16, 64, 8, 8)):
        x = torch.rand(*shape)
        with torch.no_grad():
            ref = conv(x)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = guarded(x).float()
        assert out.shape == ref.shape
        torch.testing.assert_close(out, ref, rtol=0.05, atol=0.05 * ref.abs().max().item())
