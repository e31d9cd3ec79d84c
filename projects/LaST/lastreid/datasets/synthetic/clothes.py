"""Synthetic LaST, PRCC and Celeb-reID: clothes-changing trees in their real layouts."""

import os

import numpy as np

from .common import TreeWriter, dataset_sizes, spread_images
from .drawing import hsv_colour, new_outfit, new_person

__all__ = ["write_last", "write_prcc", "write_celebreid"]


def write_last(root, seed=0, **sizes):
    """Writes ``<root>/last`` (see the module docstring); returns counts per split
    (``{"train": {"ids", "outfits", "images"}, "val/query": ..., "test/gallery": ...}``).
    Sizes (default preset unless given): train_ids, train_images (per person),
    max_outfits, val_ids, test_ids, query_images and gallery_images (per person),
    distractor_ids (test-gallery-only persons)."""
    sizes = dataset_sizes("last", sizes)
    out = TreeWriter(root, "last", seed, sizes)
    rng = out.rng
    n_ids = sizes["train_ids"] + sizes["val_ids"] + sizes["test_ids"] + sizes["distractor_ids"]
    pids = iter(int(p) for p in rng.choice(999_999, n_ids, replace=False) + 1)

    def person_with_outfits():
        pid = next(pids)
        n_outfits = int(rng.integers(1, sizes["max_outfits"] + 1))
        return pid, new_person(rng), [new_outfit(rng) for _ in range(n_outfits)]

    frame = {}

    def save(split, subdir, pid, person, outfits, k):
        # <pid>_<scene>_<frame>_<track>_<shot>_<outfit>: frames count up per person, so names
        # are unique
        frame[pid] = frame.get(pid, int(rng.integers(0, 50_000))) + int(rng.integers(1, 40))
        name = (
            f"{pid:06d}_{int(rng.integers(0, 1000)):03d}_{frame[pid]:05d}_"
            f"{int(rng.integers(0, 10_000)):04d}_{int(rng.integers(0, 100)):02d}_{k:03d}.jpg"
        )
        out.save(split, os.path.join(subdir, name), person, outfits[k], pid, k)

    for _ in range(sizes["train_ids"]):
        pid, person, outfits = person_with_outfits()
        for k in spread_images(rng, sizes["train_images"], len(outfits)):
            save("train", f"train/{pid:06d}", pid, person, outfits, k)
    for split, n_ids in (("val", sizes["val_ids"]), ("test", sizes["test_ids"])):
        for _ in range(n_ids):
            pid, person, outfits = person_with_outfits()
            for _ in range(sizes["query_images"]):
                save(
                    f"{split}/query",
                    f"{split}/query",
                    pid,
                    person,
                    outfits,
                    int(rng.integers(len(outfits))),
                )
            for k in spread_images(rng, sizes["gallery_images"], len(outfits)):
                save(f"{split}/gallery", f"{split}/gallery/{pid:06d}", pid, person, outfits, k)
    for _ in range(sizes["distractor_ids"]):
        pid, person, outfits = person_with_outfits()
        for k in spread_images(rng, sizes["gallery_images"], len(outfits)):
            save("test/gallery", f"test/gallery/{pid:06d}", pid, person, outfits, k)
    return out.finish()


def write_prcc(root, seed=0, **sizes):
    """Writes ``<root>/prcc/rgb`` (train, val, test/A|B|C); returns counts per split
    (keys "train", "val", "test/A", "test/B", "test/C"). Sizes: train_ids, val_ids,
    test_ids, images_per_camera (per person and camera)."""
    sizes = dataset_sizes("prcc", sizes)
    out = TreeWriter(root, "prcc", seed, sizes)
    rng = out.rng
    # Each camera has its own background tone and viewing distance.
    cameras = {
        cam: (hsv_colour(rng, (0.0, 0.4), (0.35, 0.85)), rng.uniform(0.9, 1.05)) for cam in "ABC"
    }
    n_ids = sizes["train_ids"] + sizes["val_ids"] + sizes["test_ids"]
    pids = iter(int(p) for p in rng.permutation(np.arange(1, n_ids + 1)))
    for split, n_split in (
        ("train", sizes["train_ids"]),
        ("val", sizes["val_ids"]),
        ("test", sizes["test_ids"]),
    ):
        for _ in range(n_split):
            pid, person = next(pids), new_person(rng)
            outfits = [new_outfit(rng), new_outfit(rng)]
            for cam, (tint, scale) in cameras.items():
                outfit = 1 if cam == "C" else 0  # A and B share clothes, C is another outfit
                for i in range(sizes["images_per_camera"]):
                    name = f"{cam}_cropped_rgb{i * 3 + int(rng.integers(1, 4)):03d}.jpg"
                    if split == "test":
                        tally, relpath = f"test/{cam}", f"rgb/test/{cam}/{pid:03d}/{name}"
                    else:
                        tally, relpath = split, f"rgb/{split}/{pid:03d}/{name}"
                    out.save(tally, relpath, person, outfits[outfit], pid, outfit, tint, scale)
    return out.finish()


def write_celebreid(root, seed=0, **sizes):
    """Writes ``<root>/Celeb-reID`` (flat train, query, gallery of <pid>_<n>_<x>.jpg);
    returns counts per split. Sizes: train_ids, train_images, test_ids, query_images,
    gallery_images (per person)."""
    sizes = dataset_sizes("celebreid", sizes)
    out = TreeWriter(root, "celebreid", seed, sizes)
    rng = out.rng
    n_train = sizes["train_ids"]
    plan = [("train", sizes["train_images"], 0)] * n_train + [
        ("test", sizes["query_images"] + sizes["gallery_images"], sizes["query_images"])
    ] * sizes["test_ids"]
    for pid, (split, n_images, n_query) in enumerate(plan, start=1):
        person, outfits = new_person(rng), []
        for n in range(1, n_images + 1):
            if not outfits or rng.random() < 0.7:  # most snapshots show new clothes
                outfits.append(new_outfit(rng))
                k = len(outfits) - 1
            else:
                k = int(rng.integers(len(outfits)))
            folder = split if split == "train" else ("query" if n <= n_query else "gallery")
            name = f"{pid}_{n}_{int(rng.integers(0, 2))}.jpg"
            out.save(folder, f"{folder}/{name}", person, outfits[k], pid, k)
    return out.finish()
