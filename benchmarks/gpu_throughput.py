"""GPU throughput of BoT R50 256x128 (batch 64, fp16 AMP) and the CPU loader feeding it.

Data: synthetic LaST (lastreid.datasets.synthetic) with every JPEG resized to the real-crop size
128x256 (w x h), written to a temporary folder or --workdir. Figures:

  loader, per worker   images/s of ONE process reading, decoding and transforming images
                       (the training transforms with the full augmentation, then the test
                       ones): what each DATALOADER.NUM_WORKERS worker can deliver. Runs on
                       any machine.
  train, real loader   (a) training img/s of lastreid's Trainer step (CudaAMPTrainer) fed by
                       its own loader (fastreid's DataLoaderX, NUM_WORKERS workers)
  train, on GPU        (b) the same step on one batch already on the GPU: the pure-GPU ceiling
  data-bound           a / b (1.0: the loader keeps up; below: the GPU waits for data)
  channels-last        (b) again with MODEL.CHANNELS_LAST on (off is the CUDA default)
  extraction           feature extraction img/s through the test loader (fp32, no flip)

Without CUDA the GPU figures are skipped with a message; the loader figures still run.

    python benchmarks/gpu_throughput.py --json gpu_figures.json
    python benchmarks/gpu_throughput.py --loader-images 200       # CPU only, quick
"""

import argparse
import glob
import json
import os
import sys
import tempfile
import time

import lastreid  # noqa: F401  (before fastreid)
from lastreid.datasets import synthetic

import torch
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "LaST", "bagtricks_R50.yml")
CROP = (128, 256)  # (width, height) of the JPEGs: LaST's typical crop, the model's 256x128


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workdir", default="", help="keep / reuse the synthetic JPEG tree here")
    p.add_argument("--train-ids", type=int, default=128, help="synthetic training identities")
    p.add_argument("--num-workers", type=int, default=8, help="DATALOADER.NUM_WORKERS (a)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    p.add_argument("--steps", type=int, default=30, help="timed training steps per figure")
    p.add_argument("--loader-images", type=int, default=600, help="images per loader figure")
    p.add_argument("--json", default="", help="also write the figures to this file")
    return p.parse_args()


def write_tree(root, train_ids):
    """Synthetic LaST under root (reused when already there), JPEGs at CROP size."""
    marker = os.path.join(root, "last", ".real-crop-size")
    if os.path.isfile(marker):
        return
    synthetic.write_last(
        root,
        seed=0,
        train_ids=train_ids,
        train_images=10,
        val_ids=4,
        test_ids=60,
        query_images=4,
        gallery_images=12,
        distractor_ids=10,
    )
    for path in glob.glob(os.path.join(root, "last", "**", "*.jpg"), recursive=True):
        with Image.open(path) as image:
            big = image.convert("RGB").resize(CROP, Image.Resampling.BICUBIC)
        big.save(path, quality=90)
    open(marker, "w").close()


def make_cfg(opts=()):
    from lastreid.startup import build_cfg

    return build_cfg(
        CONFIG, ["MODEL.BACKBONE.PRETRAIN", "False", "DATASETS.TESTS", '("LaST",)'] + list(opts)
    )


def loader_per_worker(n_images):
    """Images/s of one process applying the train and the test transforms, with one torch
    thread like a DataLoader worker."""
    from lastreid.loaders import build_test_set, build_train_set

    out, threads = {}, torch.get_num_threads()
    torch.set_num_threads(1)
    cfg = make_cfg(["MODEL.DEVICE", "cpu"])
    train_set = build_train_set(cfg)
    test_set, _ = build_test_set(cfg, "LaST")
    for name, data in (("train", train_set), ("test", test_set)):
        n = min(n_images, len(data))
        data[0]  # first-use costs out of the timing
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(n):
            data[i % len(data)]
        out[name] = n / (time.perf_counter() - t0)
        out[name + "_per_cpu_second"] = n / (time.process_time() - c0)  # less load-dependent
    torch.set_num_threads(threads)
    return out


class _SameBatch:
    """An endless iterator over one batch (already on the GPU)."""

    def __init__(self, batch):
        self.batch = batch

    def __iter__(self):
        return self

    def __next__(self):
        return self.batch


def train_img_s(cfg, steps, warmup, batch, on_gpu_only):
    """Training images/s of lastreid's Trainer step; on_gpu_only: the same batch, on the
    GPU, every step (no loader)."""
    from lastreid.engine import Trainer
    from lastreid.fastreid_internals import batch_iterator, set_batch_iterator, step_runner

    from fastreid.utils.events import EventStorage

    trainer = Trainer(cfg)
    step = step_runner(trainer)
    if on_gpu_only:
        set_batch_iterator(step, _SameBatch(next(batch_iterator(step))))
        trainer.data_loader.shutdown()  # no loader work competes with the GPU-only steps
    with EventStorage(0) as storage:
        for i in range(warmup + steps):
            if i == warmup:
                torch.cuda.synchronize()
                t0 = time.perf_counter()
            storage.iter = step.iter = i
            step.run_step()
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    if not on_gpu_only:
        trainer.data_loader.shutdown()
    return steps * batch / seconds


@torch.no_grad()
def extraction_img_s(cfg):
    """Feature extraction images/s through the test loader (fp32, no flip), one pass."""
    from lastreid import precision
    from lastreid.engine import Trainer
    from lastreid.fastreid_internals import batch_iterator, set_batch_iterator, step_runner

    model = precision.for_inference(Trainer.build_model(cfg), precision.resolve(cfg, log=False))
    model.eval()
    loader, _ = Trainer.build_test_loader(cfg, "LaST")
    n, t0 = 0, None
    for i, inputs in enumerate(loader):
        if i == 1:  # the first batch warms cuDNN up
            torch.cuda.synchronize()
            t0, n = time.perf_counter(), 0
        model(inputs)
        n += inputs["images"].shape[0]
    torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def gpu_figures(args, output):
    # fmt: off
    base = [
        "MODEL.DEVICE", "cuda",
        "SOLVER.AMP.ENABLED", "True",
        "OUTPUT_DIR", output,
        "SOLVER.IMS_PER_BATCH", str(args.batch),
        "DATALOADER.NUM_WORKERS", str(args.num_workers),
    ]
    # fmt: on
    out = {"device": torch.cuda.get_device_name(0)}
    off, on = base + ["MODEL.CHANNELS_LAST", "off"], base + ["MODEL.CHANNELS_LAST", "on"]
    for name, opts, only_gpu in (
        ("train_real_loader", off, False),
        ("train_on_gpu", off, True),
        ("train_on_gpu_channels_last", on, True),
        ("train_real_loader_channels_last", on, False),
    ):
        print("measuring", name, "...", flush=True)
        out[name] = train_img_s(make_cfg(opts), args.steps, args.warmup, args.batch, only_gpu)
    out["data_bound"] = out["train_real_loader"] / out["train_on_gpu"]
    out["data_bound_channels_last"] = (
        out["train_real_loader_channels_last"] / out["train_on_gpu_channels_last"]
    )
    for name, opts in (("extraction", off), ("extraction_channels_last", on)):
        print("measuring", name, "...", flush=True)
        out[name] = extraction_img_s(make_cfg(opts))
    return out


def main():
    args = parse_args()
    if args.workdir:
        return measure(args, args.workdir)
    with tempfile.TemporaryDirectory(prefix="gpu_throughput_") as work:
        return measure(args, work)


def measure(args, work):
    root = os.path.join(work, "datasets")
    write_tree(root, args.train_ids)
    os.environ["FASTREID_DATASETS"] = root
    figures = {
        "load_average": os.getloadavg(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "num_workers": args.num_workers,
        "batch": args.batch,
    }
    per_worker = loader_per_worker(args.loader_images)
    figures["loader_per_worker"] = per_worker
    print(
        "CPU loader, one worker: {:.0f} img/s training transforms, {:.0f} img/s test "
        "transforms ({}x{} JPEGs; load average {:.1f}); per CPU second {:.0f} and {:.0f}".format(
            per_worker["train"],
            per_worker["test"],
            CROP[0],
            CROP[1],
            figures["load_average"][0],
            per_worker["train_per_cpu_second"],
            per_worker["test_per_cpu_second"],
        )
    )
    if torch.cuda.is_available():
        gpu = gpu_figures(args, os.path.join(work, "output"))
        figures["gpu"] = gpu
        print("\n{} (batch {}, fp16 AMP, BoT R50 256x128)".format(gpu["device"], args.batch))
        print(
            "training img/s: (a) real loader, {} workers {:.0f}; (b) batch on the GPU {:.0f}; "
            "data-bound a/b {:.2f}".format(
                args.num_workers, gpu["train_real_loader"], gpu["train_on_gpu"], gpu["data_bound"]
            )
        )
        print(
            "channels-last on: (a) {:.0f}, (b) {:.0f}, a/b {:.2f}".format(
                gpu["train_real_loader_channels_last"],
                gpu["train_on_gpu_channels_last"],
                gpu["data_bound_channels_last"],
            )
        )
        print(
            "feature extraction img/s (test loader, fp32, no flip): {:.0f}; channels-last "
            "{:.0f}".format(gpu["extraction"], gpu["extraction_channels_last"])
        )
        print(
            "loader workers needed to keep (b) fed: {:.1f}".format(
                gpu["train_on_gpu"] / per_worker["train"]
            )
        )
    else:
        figures["gpu"] = None
        print(
            "\nGPU figures skipped: torch.cuda.is_available() is False on this machine "
            "(run this script where CUDA works, e.g. through `make gpu-check`)"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
