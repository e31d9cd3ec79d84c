"""CPU throughput of BoT on the precision paths of `lastreid.precision`, and what bf16 does
to the features and the ranking.

Throughput (seeded random weights, random images, the same batch every step):
  fp32        plain float32, contiguous (NCHW) layout
  cl          channels-last weights and batches, float32
  cl+bf16     channels-last + bfloat16 autocast (the "auto" path on a CPU with native bf16)
Training img/s is one full step (forward, losses, backward, Adam) of lastreid's CPU trainer
(`train_steps.CpuTrainer` on `Trainer.build_model` / `build_optimizer`); inference img/s is
one forward pass (no flip) of `precision.for_inference`'s model, which evaluation and
feature extraction use (on cl+bf16 a frozen copy with BatchNorms folded into bf16 convs).
The paths take turns step by step and img/s uses
the median step, so a change in the machine's load hits every path alike; the load average
is printed because the absolute figures depend on it. The first-step loss of each path
(same weights, same batch) shows that the losses agree.

Quality, on the synthetic `default` LaST test split (written to a temporary folder or
--workdir): a seeded random BoT and one trained --quality-epochs epochs with lastreid's
Trainer on configs/LaST/bagtricks_R50_synthetic.yml (--quality-depth, default R18, which
learns in 6 epochs, 30 s; an R50 needs the recipe's 20, 3-4 min). Each path embeds
query + gallery (flip-averaged); the table gives the min / mean cosine to the fp32
features and Rank-1 / mAP from `lastreid.evaluation.rank_metrics` (cosine, exact). The last
row is fp32 on the images plus uniform +-0.5 grey-level noise: an invisible change of the
input, the yardstick for the bf16 changes.

    python benchmarks/cpu_throughput.py                  # R50 256x128 batch 32; quality R18
    python benchmarks/cpu_throughput.py --threads 1 --skip-quality
    python benchmarks/cpu_throughput.py --depth 18x --size 128 64 --quality-epochs 0
    python benchmarks/cpu_throughput.py --train-iters 0 --infer-iters 0 \\
        --quality-depth 50x --quality-epochs 20
"""

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time

import lastreid  # noqa: F401  (before fastreid)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "LaST", "bagtricks_R50.yml")
SYNTHETIC_CONFIG = os.path.join(REPO, "configs", "LaST", "bagtricks_R50_synthetic.yml")
MODES = {"fp32": ("off", "off"), "cl": ("on", "off"), "cl+bf16": ("on", "on")}


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--size",
        type=int,
        nargs=2,
        default=[256, 128],
        metavar=("H", "W"),
        help="input size of the throughput runs (default 256 128)",
    )
    p.add_argument("--batch", type=int, default=32, help="images per batch (default 32)")
    p.add_argument(
        "--train-iters", type=int, default=4, help="timed training steps per path (0: none)"
    )
    p.add_argument(
        "--infer-iters", type=int, default=6, help="timed inference batches per path (0: none)"
    )
    p.add_argument("--warmup", type=int, default=2, help="untimed steps/batches first")
    p.add_argument("--depth", default="50x", help="ResNet depth: 18x, 34x, 50x, 101x")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--num-classes", type=int, default=5000, help="classifier size (LaST: 5000)")
    p.add_argument(
        "--modes", default=",".join(MODES), help="comma-separated subset of " + ", ".join(MODES)
    )
    p.add_argument("--skip-quality", action="store_true", help="throughput only")
    p.add_argument(
        "--quality-epochs",
        type=int,
        default=6,
        help="epochs of synthetic training of the second quality model (0: only the "
        "seeded random one)",
    )
    p.add_argument(
        "--quality-depth",
        default="18x",
        help="ResNet depth of the quality models (default 18x, quick to train; "
        "see the module docstring)",
    )
    p.add_argument(
        "--train-path",
        choices=("auto", "fp32"),
        default="auto",
        help="precision the quality model is trained on (auto: this machine's)",
    )
    p.add_argument(
        "--data-root",
        default="",
        help="a datasets root holding synthetic LaST (default: written to a temporary folder)",
    )
    p.add_argument(
        "--workdir",
        default="",
        help="keep the synthetic data and the quality "
        "model here and reuse them on the next run (default: a temporary folder)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="", help="also write the figures to this file")
    return p.parse_args()


def _feat_dim(depth):
    return 512 if depth in ("18x", "34x") else 2048


def make_cfg(config, mode, depth, extra=()):
    from lastreid.startup import build_cfg

    cl, bf = MODES[mode]
    # fmt: off
    opts = [
        "MODEL.DEVICE", "cpu",
        "MODEL.BACKBONE.PRETRAIN", "False",
        "MODEL.BACKBONE.DEPTH", depth,
        "MODEL.BACKBONE.FEAT_DIM", str(_feat_dim(depth)),
        "MODEL.CHANNELS_LAST", cl,
        "MODEL.CPU_BF16", bf,
        "DATALOADER.NUM_WORKERS", "0",
    ]
    # fmt: on
    return build_cfg(config, opts + list(extra))


def seed_all(seed):
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class _Path:
    """One path's model, optimizer and CPU trainer, built from the same seed."""

    def __init__(self, mode, args):
        from lastreid import precision, train_steps
        from lastreid.engine import Trainer

        import torch

        h, w = args.size
        cfg = make_cfg(
            CONFIG,
            mode,
            args.depth,
            ["MODEL.HEADS.NUM_CLASSES", str(args.num_classes), "INPUT.SIZE_TRAIN", str([h, w])],
        )
        self.fast = precision.resolve(cfg, log=False)
        seed_all(args.seed)
        model = Trainer.build_model(cfg)
        optimizer, param_wrapper = Trainer.build_optimizer(cfg, model)
        gen = torch.Generator().manual_seed(args.seed)
        self.images = torch.rand(args.batch, 3, h, w, generator=gen) * 255
        targets = (torch.arange(args.batch) // cfg.DATALOADER.NUM_INSTANCE) % args.num_classes
        camids = torch.zeros(args.batch, dtype=torch.long)

        def batches():
            while True:  # the model normalizes the images in place: a fresh copy each step
                yield {"images": self.images.clone(), "targets": targets, "camids": camids}

        self.trainer = train_steps.CpuTrainer(
            model, [], optimizer, param_wrapper, self.fast, data_loader_iter=batches()
        )
        self.model = model
        self.infer = None  # precision.for_inference(model), made on first use
        self.first_loss = None
        self.train_times, self.infer_times = [], []

    def train_step(self, storage):
        self.trainer.iter = storage.iter
        t0 = time.perf_counter()
        self.trainer.run_step()
        self.train_times.append(time.perf_counter() - t0)
        if self.first_loss is None:
            self.first_loss = storage.history("total_loss").latest()

    def infer_batch(self):
        from lastreid import precision

        import torch

        if self.infer is None:  # fp32: the model itself; bf16: a frozen BN-folded copy
            self.infer = precision.for_inference(self.model, self.fast)
        self.infer.eval()
        with torch.no_grad():
            t0 = time.perf_counter()
            self.infer({"images": self.images.clone()})
            self.infer_times.append(time.perf_counter() - t0)
        self.model.train()


def throughput(modes, args):
    """{mode: (train img/s, inference img/s, first-step loss)}. The paths take turns, one
    step (or batch) each per round, so a change in the machine's load hits all of them;
    img/s is the batch over the median time of the timed rounds."""
    from fastreid.utils.events import EventStorage

    paths = {mode: _Path(mode, args) for mode in modes}
    # Inference first, in a fresh process like --eval-only and feature extraction: after
    # training steps glibc's heap has grown and fp32 inference runs ~1.3x faster here
    # (fewer page faults on its large activations), bf16 much less so.
    for i in range(args.warmup + args.infer_iters if args.infer_iters else 0):
        for p in paths.values():
            p.infer_batch()
    for i in range(args.warmup + args.train_iters if args.train_iters else 0):
        for p in paths.values():
            with EventStorage(i) as storage:
                p.train_step(storage)

    def ips(times, n):
        return args.batch / statistics.median(times[args.warmup :][:n]) if n else float("nan")

    return {
        m: (
            ips(p.train_times, args.train_iters),
            ips(p.infer_times, args.infer_iters),
            p.first_loss,
        )
        for m, p in paths.items()
    }


def quality_model(args, workdir, epochs):
    """BoT on synthetic LaST (the data must be in $FASTREID_DATASETS): seeded random weights
    when epochs is 0, else trained that long with lastreid's Trainer on --train-path.
    Returns (model, cfg). A model_final.pth already in `workdir` is loaded, not retrained."""
    from lastreid.checkpoint import Checkpointer
    from lastreid.engine import Trainer

    switch = "auto" if args.train_path == "auto" else "off"
    # fmt: off
    extra = [
        "OUTPUT_DIR", workdir,
        "SOLVER.MAX_EPOCH", str(max(epochs, 1)),
        "SOLVER.STEPS", "[]",  # the config's step is past a shortened run
        "SOLVER.CHECKPOINT_PERIOD", "1000",
        "TEST.EVAL_PERIOD", "1000",
        "DATASETS.TESTS", '("LaST",)',
        "TEST.FINAL_TESTS", "()",
        "MODEL.CHANNELS_LAST", switch,
        "MODEL.CPU_BF16", switch,
    ]
    # fmt: on
    cfg = make_cfg(SYNTHETIC_CONFIG, "fp32", args.quality_depth, extra)
    os.makedirs(workdir, exist_ok=True)
    seed_all(args.seed)
    trainer = Trainer(cfg)
    final = os.path.join(workdir, "model_final.pth")
    if epochs and os.path.isfile(final):
        print("(quality model: loading {})".format(final))
        Checkpointer(trainer.model).load(final)
    elif epochs:
        trainer.train()
    return trainer.model, trainer.cfg


def embed(model, data_loader, fast, flip, noise_seed=None):
    """Float32 features of the loader's images on path `fast`, flip-averaged as
    lastreid.features does (the image and its mirror, each normalized once), plus pids and
    camids. noise_seed: add uniform +-0.5 grey-level noise to the images first."""
    from lastreid import precision

    import numpy as np
    import torch

    infer = precision.for_inference(model, fast)
    infer.eval()
    gen = None if noise_seed is None else torch.Generator().manual_seed(noise_seed)
    feats, pids, camids = [], [], []
    with torch.no_grad():
        for batch in data_loader:
            images = batch["images"]
            if gen is not None:
                images = images + torch.rand(images.shape, generator=gen) - 0.5
            out = infer({"images": images.clone()})
            if flip:
                out = (out + infer({"images": images.flip(dims=[3])})) / 2
            feats.append(out.float())
            pids.append(batch["targets"].numpy())
            camids.append(batch["camids"].numpy())
    return torch.cat(feats), np.concatenate(pids), np.concatenate(camids)


NOISE_ROW = "fp32, image +-0.5 grey"


def compare_paths(model, loader, num_query, modes, flip, seed):
    """{row: min/mean cosine to fp32, Rank-1, mAP}: one row per path, plus the fp32 model
    on images with +-0.5 grey-level noise (how far an invisible change of the input moves
    the features and the ranking: the scale to judge bf16's changes by)."""
    from lastreid import precision
    from lastreid.evaluation import rank_metrics

    import torch
    import torch.nn.functional as F

    rows, ref = {}, None
    for row in list(modes) + [NOISE_ROW]:
        mode = "fp32" if row == NOISE_ROW else row
        cl, bf = MODES[mode]
        fast = precision.FastPath(cl == "on", bf == "on", mode)
        m = copy.deepcopy(model).to(
            memory_format=torch.channels_last if fast.channels_last else torch.contiguous_format
        )
        feats, pids, camids = embed(m, loader, fast, flip, seed if row == NOISE_ROW else None)
        ref = feats if ref is None else ref
        cos = F.cosine_similarity(feats, ref, dim=1)
        cmc, m_ap, _ = rank_metrics(
            feats[:num_query].clone(),
            feats[num_query:].clone(),
            pids[:num_query],
            pids[num_query:],
            camids[:num_query],
            camids[num_query:],
        )
        rows[row] = dict(
            min_cos=float(cos.min()),
            mean_cos=float(cos.mean()),
            rank1=float(cmc[0]) * 100,
            mAP=float(m_ap) * 100,
        )
    return rows


def quality(args, modes):
    """{model label: compare_paths rows} for a seeded random BoT and (with
    --quality-epochs) a briefly trained one, on synthetic LaST test; plus what was run."""
    from lastreid.datasets import synthetic
    from lastreid.engine import Trainer

    results, info = {}, {}
    with tempfile.TemporaryDirectory(prefix="cpu_throughput_") as tmp:
        work = args.workdir or tmp
        root = args.data_root or os.path.join(work, "datasets")
        if not args.data_root and not synthetic.read_counts(root).get("last"):
            synthetic.write_all(root, preset="default", seed=args.seed, datasets=("last",))
        os.environ["FASTREID_DATASETS"] = root
        for epochs in [0] + ([args.quality_epochs] if args.quality_epochs else []):
            t0 = time.perf_counter()
            name = (
                "random_{}".format(args.quality_depth)
                if not epochs
                else "run_{}_{}ep_{}".format(args.quality_depth, epochs, args.train_path)
            )
            model, cfg = quality_model(args, os.path.join(work, name), epochs)
            label = (
                "seeded random weights"
                if not epochs
                else "trained {} epochs ({} path, {:.0f} s)".format(
                    epochs, args.train_path, time.perf_counter() - t0
                )
            )
            loader, num_query = Trainer.build_test_loader(cfg, "LaST")
            results[label] = compare_paths(
                model, loader, num_query, modes, cfg.TEST.FLIP.ENABLED, args.seed
            )
            info = dict(
                num_query=num_query,
                num_gallery=len(loader.dataset) - num_query,
                size=list(cfg.INPUT.SIZE_TEST),
            )
    return results, info


def main():
    args = parse_args()
    from lastreid import precision

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        sys.exit("unknown mode(s) {}; known: {}".format(", ".join(unknown), ", ".join(MODES)))
    native, how = precision.cpu_bf16_support()
    print(
        "torch {}, {} threads; native bf16: {} ({})".format(
            torch.__version__, torch.get_num_threads(), native, how
        )
    )
    print(
        "BoT R{} at {}x{}, batch {}: {} timed training steps, {} timed inference batches "
        "per path (median), after {} warm-up".format(
            args.depth.rstrip("x"),
            args.size[0],
            args.size[1],
            args.batch,
            args.train_iters,
            args.infer_iters,
            args.warmup,
        ),
        flush=True,
    )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    speed = throughput(modes, args)
    load = max(load, os.getloadavg()[0]) if hasattr(os, "getloadavg") else load
    print(
        "(1-minute load average up to {:.1f} on {} CPUs while timing)".format(load, os.cpu_count())
    )
    base = speed.get("fp32")
    print()
    print("| path     | train img/s | x fp32 | infer img/s | x fp32 | first-step loss |")
    print("|----------|-------------|--------|-------------|--------|-----------------|")
    for mode, (tr, inf, loss) in speed.items():
        rt = "{:.2f}".format(tr / base[0]) if base else "-"
        ri = "{:.2f}".format(inf / base[1]) if base else "-"
        print(
            "| {:8s} | {:11.2f} | {:>6s} | {:11.2f} | {:>6s} | {:15.4f} |".format(
                mode, tr, rt, inf, ri, float("nan") if loss is None else loss
            )
        )
    result = {
        "speed": {m: dict(train=s[0], infer=s[1], first_loss=s[2]) for m, s in speed.items()},
        "load_average": load,
    }

    if not args.skip_quality:
        qmodes = ["fp32"] + [m for m in modes if m != "fp32"]
        results, info = quality(args, qmodes)
        print()
        print(
            "Quality: BoT R{} on synthetic LaST test at {}x{} ({} queries x {} gallery), "
            "features flip-averaged; cosine to the fp32 features of the same model".format(
                args.quality_depth.rstrip("x"),
                info["size"][0],
                info["size"][1],
                info["num_query"],
                info["num_gallery"],
            )
        )
        for label, rows in results.items():
            print()
            print("{}:".format(label))
            print(
                "| path                   | min cos  | mean cos | Rank-1 | dRank-1 "
                "|  mAP  |  dmAP |"
            )
            print(
                "|------------------------|----------|----------|--------|---------|-------|-------|"
            )
            ref = rows["fp32"]
            for row, r in rows.items():
                print(
                    "| {:22s} | {:8.6f} | {:8.6f} | {:6.2f} | {:+7.2f} "
                    "| {:5.2f} | {:+5.2f} |".format(
                        row,
                        r["min_cos"],
                        r["mean_cos"],
                        r["rank1"],
                        r["rank1"] - ref["rank1"],
                        r["mAP"],
                        r["mAP"] - ref["mAP"],
                    )
                )
        result["quality"] = dict(models=results, **info)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(args=vars(args), **result), f, indent=1)


if __name__ == "__main__":
    main()
