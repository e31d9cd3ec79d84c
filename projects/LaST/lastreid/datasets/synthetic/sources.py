"""Synthetic Market-1501, DukeMTMC-reID and MSMT17 in the released layouts fastreid's own
classes read: one outfit per person, several cameras, junk and distractor ids."""

import os

from .common import TreeWriter, camera_looks, dataset_sizes
from .drawing import new_outfit, new_person

__all__ = ["write_market1501", "write_dukemtmc", "write_msmt17"]


def _test_cameras(rng, cameras, n_query, n_gallery):
    """Query cameras (one camera) and gallery cameras (the others) of a test person."""
    query_cam = int(rng.choice(list(cameras)))
    others = [c for c in cameras if c != query_cam]
    return [query_cam] * n_query, [others[i % len(others)] for i in range(n_gallery)]


def _write_bounding_boxes(root, dataset, seed, sizes, name_of, max_pid):
    """Market-1501 / DukeMTMC-reID: bounding_box_train, query and bounding_box_test."""
    out = TreeWriter(root, dataset, seed, sizes)
    rng = out.rng
    cameras = camera_looks(rng, dataset)
    n_ids = sizes["train_ids"] + sizes["test_ids"] + sizes.get("distractor_ids", 0)
    pids = iter(int(p) for p in rng.choice(max_pid, n_ids, replace=False) + 1)
    frames = {}

    def save(folder, tally, pid, person, outfit, cam, counted=True):
        frames[pid] = frames.get(pid, int(rng.integers(0, 1000))) + int(rng.integers(1, 50))
        tint, scale = cameras[cam]
        out.save(
            tally,
            os.path.join(folder, name_of(pid, cam, frames[pid], rng)),
            person,
            outfit,
            pid,
            0,
            tint,
            scale,
            counted=counted,
        )

    for _ in range(sizes["train_ids"]):
        pid, person, outfit = next(pids), new_person(rng), new_outfit(rng)
        first = int(rng.integers(1, len(cameras) + 1))
        for i in range(sizes["train_images"]):  # at least two cameras per person
            cam = (first + i - 1) % len(cameras) + 1
            save("bounding_box_train", "train", pid, person, outfit, cam)
    for _ in range(sizes["test_ids"]):
        pid, person, outfit = next(pids), new_person(rng), new_outfit(rng)
        query_cams, gallery_cams = _test_cameras(
            rng, cameras, sizes["query_images"], sizes["gallery_images"]
        )
        for cam in query_cams:
            save("query", "query", pid, person, outfit, cam)
        for cam in gallery_cams:
            save("bounding_box_test", "gallery", pid, person, outfit, cam)
    for _ in range(sizes.get("distractor_ids", 0)):  # Duke: gallery-only persons
        pid, person, outfit = next(pids), new_person(rng), new_outfit(rng)
        for _ in range(sizes["gallery_images"]):
            cam = int(rng.choice(list(cameras)))
            save("bounding_box_test", "gallery", pid, person, outfit, cam)
    # Market: distractors (pid 0, kept by fastreid) and junk (pid -1, skipped) in the gallery.
    for pid, key, counted in ((0, "distractor_images", True), (-1, "junk_images", False)):
        for _ in range(sizes.get(key, 0)):
            save(
                "bounding_box_test",
                "gallery",
                pid,
                new_person(rng),
                new_outfit(rng),
                int(rng.choice(list(cameras))),
                counted=counted,
            )
    return out.finish()


def _market_name(pid, cam, frame, rng):
    pid_text = "-1" if pid < 0 else f"{pid:04d}"
    sequence, box = int(rng.integers(1, 7)), int(rng.integers(0, 10))
    return f"{pid_text}_c{cam}s{sequence}_{frame:06d}_{box:02d}.jpg"


def _duke_name(pid, cam, frame, rng):
    return f"{pid:04d}_c{cam}_f{frame:07d}.jpg"


def write_market1501(root, seed=0, **sizes):
    """Writes ``<root>/Market-1501-v15.09.15/{bounding_box_train,query,bounding_box_test}``
    with ``NNNN_cCsS_FFFFFF_BB.jpg`` names, cameras c1..c6; returns counts per split
    ("train", "query", "gallery"; junk images are not counted, as fastreid skips them).
    Sizes: train_ids, train_images, test_ids, query_images, gallery_images (per person),
    distractor_images (pid 0) and junk_images (pid -1) in the gallery."""
    return _write_bounding_boxes(
        root, "market1501", seed, dataset_sizes("market1501", sizes), _market_name, 1501
    )


def write_dukemtmc(root, seed=0, **sizes):
    """Writes ``<root>/DukeMTMC-reID/{bounding_box_train,query,bounding_box_test}`` with
    ``NNNN_cC_fFFFFFFF.jpg`` names, cameras c1..c8; returns counts per split. Sizes:
    train_ids, train_images, test_ids, query_images, gallery_images, distractor_ids
    (gallery-only persons)."""
    return _write_bounding_boxes(
        root, "dukemtmc", seed, dataset_sizes("dukemtmc", sizes), _duke_name, 7140
    )


def write_msmt17(root, seed=0, **sizes):
    """Writes ``<root>/MSMT17_V1/{train,test}/<pid>/*.jpg`` and its
    ``list_{train,val,query,gallery}.txt`` (lines ``<pid>/<file>.jpg <label>``; file names
    ``<pid>_<idx>_<camera>_<time>_<n>_<k>.jpg``, cameras 01..15); returns counts per split
    ("train", "val", "query", "gallery"). Sizes: train_ids, train_images and val_images
    (per train person), test_ids, query_images, gallery_images."""
    sizes = dataset_sizes("msmt17", sizes)
    out = TreeWriter(root, "msmt17", seed, sizes)
    rng = out.rng
    cameras = camera_looks(rng, "msmt17")
    lists = {split: [] for split in ("train", "val", "query", "gallery")}
    index = {}

    def save(split, folder, label, person, outfit, cam):
        index[(folder, label)] = index.get((folder, label), -1) + 1
        time_of_day = ("morning", "noon", "afternoon")[int(rng.integers(3))]
        rel = (
            f"{label:04d}/{label:04d}_{index[(folder, label)]:03d}_{cam:02d}_0303{time_of_day}_"
            f"{int(rng.integers(0, 10_000)):04d}_{int(rng.integers(0, 2))}.jpg"
        )
        tint, scale = cameras[cam]
        out.save(split, os.path.join(folder, rel), person, outfit, label, 0, tint, scale)
        lists[split].append(f"{rel} {label}\n")

    for label in range(sizes["train_ids"]):
        person, outfit = new_person(rng), new_outfit(rng)
        first = int(rng.integers(1, len(cameras) + 1))
        n = sizes["train_images"] + sizes["val_images"]
        for i in range(n):
            split = "train" if i < sizes["train_images"] else "val"
            save(split, "train", label, person, outfit, (first + i - 1) % len(cameras) + 1)
    for label in range(sizes["test_ids"]):
        person, outfit = new_person(rng), new_outfit(rng)
        query_cams, gallery_cams = _test_cameras(
            rng, cameras, sizes["query_images"], sizes["gallery_images"]
        )
        for cam in query_cams:
            save("query", "test", label, person, outfit, cam)
        for cam in gallery_cams:
            save("gallery", "test", label, person, outfit, cam)
    for split, lines in lists.items():
        with open(os.path.join(out.folder, f"list_{split}.txt"), "w") as f:
            f.writelines(lines)
    return out.finish()
