"""CPU throughput of BoT with the precision paths of `lastreid.precision`, and what bf16
does to the features and the ranking.

Throughput (seeded random weights, random images, the same batch every step):
  fp32        plain float32, contiguous (NCHW) layout
  cl          channels-last weights and batches, float32
  cl+bf16     channels-last + bfloat16 autocast (the "auto" path on a CPU with native bf16)
Training img/s is one full step (forward, losses, backward, Adam) of lastreid's CPU
trainer (`precision.CpuTrainer`, built by `lastreid.engine.Trainer`'s model/optimizer
builders); inference img/s is one forward pass in eval mode (no flip). The first-step
total loss of each path (same weights, same batch) shows the losses agree.

Quality: BoT is trained briefly on the synthetic `default` LaST (written to a temporary
folder unless --data-root is given, seeded) with lastreid's Trainer, then the LaST test
split (query + gallery, with the flip averaging of TEST.FLIP) is embedded on each path;
the table gives the minimum cosine similarity of each path's features to fp32 and Rank-1 /
mAP from `lastreid.evaluation.rank_metrics` (cosine, exact), with the change to fp32.

    python benchmarks/cpu_throughput.py                     # BoT R50, 256x128, batch 32
    python benchmarks/cpu_throughput.py --depth 18x --size 128 64 --skip-quality
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
    p.add_argument("--size", type=int, nargs=2, default=[256, 128], metavar=("H", "W"),
                   help="input size of the throughput runs (default 256 128)")
    p.add_argument("--batch", type=int, default=32, help="images per batch (default 32)")
    p.add_argument("--train-iters", type=int, default=4, help="timed training steps per path (0: none)")
    p.add_argument("--infer-iters", type=int, default=6, help="timed inference batches per path (0: none)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps/batches first")
    p.add_argument("--depth", default="50x", help="ResNet depth: 18x, 34x, 50x, 101x")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--num-classes", type=int, default=5000, help="classifier size (LaST: 5000)")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of "
                   + ", ".join(MODES))
    p.add_argument("--skip-quality", action="store_true", help="throughput only")
    p.add_argument("--quality-epochs", type=int, default=6,
                   help="epochs of the synthetic training before the quality check (0: random)")
    p.add_argument("--data-root", default="", help="a datasets root holding synthetic LaST "
                   "(default: written to a temporary folder)")
    p.add_argument("--workdir", default="", help="keep the synthetic data and the quality "
                   "model here and reuse them on the next run (default: a temporary folder)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="", help="also write the figures to this file")
    return p.parse_args()


def _feat_dim(depth):
    return 512 if depth in ("18x", "34x") else 2048


def make_cfg(config, mode, args, extra=()):
    from lastreid.config import build_cfg

    cl, bf = MODES[mode]
    opts = ["MODEL.DEVICE", "cpu", "MODEL.BACKBONE.PRETRAIN", "False",
            "MODEL.BACKBONE.DEPTH", args.depth, "MODEL.BACKBONE.FEAT_DIM", str(_feat_dim(args.depth)),
            "MODEL.CHANNELS_LAST", cl, "MODEL.CPU_BF16", bf, "DATALOADER.NUM_WORKERS", "0"]
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
        import torch

        from lastreid import precision
        from lastreid.engine import Trainer

        h, w = args.size
        cfg = make_cfg(CONFIG, mode, args, ["MODEL.HEADS.NUM_CLASSES", str(args.num_classes),
                                            "INPUT.SIZE_TRAIN", str([h, w])])
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

        self.trainer = precision.CpuTrainer(model, [], optimizer, param_wrapper, self.fast,
                                            data_loader_iter=batches())
        self.infer = precision.for_inference(model, self.fast)
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
        import torch

        self.infer.eval()
        with torch.no_grad():
            t0 = time.perf_counter()
            self.infer({"images": self.images.clone()})
            self.infer_times.append(time.perf_counter() - t0)
        self.infer.train()


def throughput(modes, args):
    """{mode: (train img/s, inference img/s, first-step loss)}. The paths take turns, one
    step (or batch) each per round, so a change in the machine's load hits all of them;
    img/s is the batch over the median time of the timed rounds."""
    from fastreid.utils.events import EventStorage

    paths = {mode: _Path(mode, args) for mode in modes}
    for i in range(args.warmup + args.train_iters if args.train_iters else 0):
        for p in paths.values():
            with EventStorage(i) as storage:
                p.train_step(storage)
    for i in range(args.warmup + args.infer_iters if args.infer_iters else 0):
        for p in paths.values():
            p.infer_batch()

    def ips(times, n):
        return args.batch / statistics.median(times[args.warmup:][:n]) if n else float("nan")

    return {m: (ips(p.train_times, args.train_iters), ips(p.infer_times, args.infer_iters),
                p.first_loss) for m, p in paths.items()}


def train_quality_model(args, root, workdir):
    """BoT trained for --quality-epochs on synthetic LaST (the machine's auto path); returns
    (model, cfg). A model_final.pth already in `workdir` is loaded instead."""
    from lastreid.checkpoint import Checkpointer
    from lastreid.engine import Trainer

    extra = ["OUTPUT_DIR", workdir, "SOLVER.MAX_EPOCH", str(max(args.quality_epochs, 1)),
             "SOLVER.CHECKPOINT_PERIOD", "1000", "TEST.EVAL_PERIOD", "1000",
             "DATASETS.TESTS", '("LaST",)', "TEST.FINAL_TESTS", "()",
             "MODEL.CHANNELS_LAST", "auto", "MODEL.CPU_BF16", "auto"]
    cfg = make_cfg(SYNTHETIC_CONFIG, "fp32", args, extra)
    os.makedirs(workdir, exist_ok=True)
    seed_all(args.seed)
    trainer = Trainer(cfg)
    final = os.path.join(workdir, "model_final.pth")
    if os.path.isfile(final):
        print("(quality model: loading {})".format(final))
        Checkpointer(trainer.model).load(final)
    elif args.quality_epochs > 0:
        trainer.train()
    return trainer.model, trainer.cfg


def embed(model, data_loader, fast, flip):
    """Features (float32) of the loader's images, as fastreid's inference_on_dataset makes
    them (mean of the image and its mirror with flip), plus pids and camids."""
    import numpy as np
    import torch

    from lastreid import precision

    infer = precision.for_inference(model, fast)
    infer.eval()
    feats, pids, camids = [], [], []
    with torch.no_grad():
        for batch in data_loader:
            images = batch["images"]
            out = infer({"images": images.clone()})
            if flip:
                out = (out + infer({"images": images.flip(dims=[3])})) / 2
            feats.append(out.float())
            pids.append(batch["targets"].numpy())
            camids.append(batch["camids"].numpy())
    return torch.cat(feats), np.concatenate(pids), np.concatenate(camids)


def quality(args, modes):
    import torch
    import torch.nn.functional as F

    from lastreid import precision, synthetic
    from lastreid.engine import Trainer
    from lastreid.evaluation import rank_metrics

    with tempfile.TemporaryDirectory(prefix="cpu_throughput_") as tmp:
        work = args.workdir or tmp
        root = args.data_root or os.path.join(work, "datasets")
        if not args.data_root and not synthetic.read_counts(root).get("last"):
            synthetic.write_all(root, preset="default", seed=args.seed, datasets=("last",))
        os.environ["FASTREID_DATASETS"] = root
        t0 = time.perf_counter()
        model, cfg = train_quality_model(args, root, os.path.join(work, "run"))
        train_s = time.perf_counter() - t0
        loader, num_query = Trainer.build_test_loader(cfg, "LaST")
        rows, ref = {}, None
        for mode in modes:
            cl, bf = MODES[mode]
            fast = precision.FastPath(cl == "on", bf == "on", mode)
            m = copy.deepcopy(model).to(memory_format=torch.channels_last if fast.channels_last
                                        else torch.contiguous_format)
            feats, pids, camids = embed(m, loader, fast, cfg.TEST.FLIP.ENABLED)
            if ref is None:
                ref = feats
            cos = F.cosine_similarity(feats, ref, dim=1)
            cmc, m_ap, _ = rank_metrics(feats[:num_query].clone(), feats[num_query:].clone(),
                                        pids[:num_query], pids[num_query:],
                                        camids[:num_query], camids[num_query:])
            rows[mode] = dict(min_cos=float(cos.min()), mean_cos=float(cos.mean()),
                              rank1=float(cmc[0]) * 100, mAP=float(m_ap) * 100)
    n = len(ref)
    return rows, dict(num_query=num_query, num_gallery=n - num_query, train_seconds=train_s,
                      epochs=args.quality_epochs, size=list(cfg.INPUT.SIZE_TEST))


def main():
    args = parse_args()
    import torch

    from lastreid import precision

    if args.threads:
        torch.set_num_threads(args.threads)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        sys.exit("unknown mode(s) {}; known: {}".format(", ".join(unknown), ", ".join(MODES)))
    native, how = precision.cpu_bf16_support()
    print("torch {}, {} threads; native bf16: {} ({})".format(
        torch.__version__, torch.get_num_threads(), native, how))
    print("BoT R{} at {}x{}, batch {}: {} timed training steps, {} timed inference batches "
          "per path (median), after {} warm-up".format(args.depth.rstrip("x"), args.size[0], args.size[1],
                                              args.batch, args.train_iters, args.infer_iters,
                                              args.warmup), flush=True)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    speed = throughput(modes, args)
    load = max(load, os.getloadavg()[0]) if hasattr(os, "getloadavg") else load
    print("(1-minute load average up to {:.1f} on {} CPUs while timing)".format(load, os.cpu_count()))
    base = speed.get("fp32")
    print()
    print("| path     | train img/s | x fp32 | infer img/s | x fp32 | first-step loss |")
    print("|----------|-------------|--------|-------------|--------|-----------------|")
    for mode, (tr, inf, loss) in speed.items():
        rt = "{:.2f}".format(tr / base[0]) if base else "-"
        ri = "{:.2f}".format(inf / base[1]) if base else "-"
        print("| {:8s} | {:11.2f} | {:>6s} | {:11.2f} | {:>6s} | {:15.4f} |".format(
            mode, tr, rt, inf, ri, float("nan") if loss is None else loss))
    result = {"speed": {m: dict(train=s[0], infer=s[1], first_loss=s[2]) for m, s in speed.items()},
              "load_average": load}

    if not args.skip_quality:
        qmodes = ["fp32"] + [m for m in modes if m != "fp32"]
        rows, info = quality(args, qmodes)
        print()
        print("Quality: BoT R{} trained {} epochs on synthetic LaST ({:.0f} s), LaST test at {}x{}: "
              "{} queries x {} gallery".format(args.depth.rstrip("x"), info["epochs"], info["train_seconds"],
                                               info["size"][0], info["size"][1],
                                               info["num_query"], info["num_gallery"]))
        print("| path     | min cos to fp32 | mean cos | Rank-1 | dRank-1 |   mAP  |  dmAP  |")
        print("|----------|-----------------|----------|--------|---------|--------|--------|")
        ref = rows["fp32"]
        for mode, r in rows.items():
            print("| {:8s} | {:15.6f} | {:8.6f} | {:6.2f} | {:+7.2f} | {:6.2f} | {:+6.2f} |".format(
                mode, r["min_cos"], r["mean_cos"], r["rank1"], r["rank1"] - ref["rank1"],
                r["mAP"], r["mAP"] - ref["mAP"]))
        result["quality"] = dict(rows=rows, **info)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(args=vars(args), **result), f, indent=1)


if __name__ == "__main__":
    main()
