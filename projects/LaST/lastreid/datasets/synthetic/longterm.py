"""Synthetic LTCC, DeepChange and VC-Clothes in their released layouts: every person has two
or more outfits seen by several cameras, and every test person's gallery covers each of its
outfits on cameras other than its queries', so the general, same-clothes and
clothes-changing protocols all have true matches."""

import os

import numpy as np

from ...errors import InputError
from .common import TreeWriter, camera_looks, dataset_sizes, spread_images
from .drawing import new_outfit, new_person

__all__ = ["write_ltcc", "write_deepchange", "write_vcclothes"]


def _outfit_sizes(dataset, sizes):
    sizes = dataset_sizes(dataset, sizes)
    if sizes.get("max_outfits", 2) < 2:
        raise InputError(
            f"{dataset} size max_outfits={sizes['max_outfits']} must be at least 2 "
            "(a clothes-changing test needs a second outfit)"
        )
    return sizes


def _people(rng, pids, max_outfits):
    """(pid, person, outfits) with 2..max_outfits outfits for each pid."""
    for pid in pids:
        n_outfits = int(rng.integers(2, max_outfits + 1))
        yield int(pid), new_person(rng), [new_outfit(rng) for _ in range(n_outfits)]


def _test_views(rng, cameras, n_outfits, n_query, n_gallery):
    """(query [(camera, outfit)], gallery [(camera, outfit)]) of a test person: queries on
    one camera, the gallery on the others, each spread over every outfit."""
    query_cam = int(rng.choice(cameras))
    others = [cam for cam in cameras if cam != query_cam]
    start = int(rng.integers(len(others)))
    query = [(query_cam, k) for k in spread_images(rng, n_query, n_outfits)]
    gallery = [
        (others[(start + i) % len(others)], k)
        for i, k in enumerate(spread_images(rng, n_gallery, n_outfits))
    ]
    return query, gallery


def write_ltcc(root, seed=0, **sizes):
    """Writes ``<root>/LTCC_ReID/{train,query,test}/`` with
    ``<pid>_<clothes>_c<camera>_<frame>.png`` names, cameras 1..12; returns counts per split
    ("train", "query", "test"). Sizes: train_ids, train_images (per person), max_outfits
    (at least 2), test_ids, query_images and gallery_images (per person)."""
    sizes = _outfit_sizes("ltcc", sizes)
    out = TreeWriter(root, "ltcc", seed, sizes)
    rng = out.rng
    cameras = camera_looks(rng, "ltcc")
    n_ids = sizes["train_ids"] + sizes["test_ids"]
    people = _people(rng, rng.choice(999, n_ids, replace=False) + 1, sizes["max_outfits"])
    frames = {}

    def save(split, pid, person, outfits, k, cam):
        frames[pid] = frames.get(pid, int(rng.integers(0, 10_000))) + int(rng.integers(1, 40))
        name = f"{pid:03d}_{k + 1}_c{cam}_{frames[pid]:06d}.png"
        tint, scale = cameras[cam]
        out.save(split, f"{split}/{name}", person, outfits[k], pid, k, tint, scale)

    for _ in range(sizes["train_ids"]):
        pid, person, outfits = next(people)
        first = int(rng.integers(len(cameras)))
        for i, k in enumerate(spread_images(rng, sizes["train_images"], len(outfits))):
            save("train", pid, person, outfits, k, (first + i) % len(cameras) + 1)
    for _ in range(sizes["test_ids"]):
        pid, person, outfits = next(people)
        query, gallery = _test_views(
            rng, list(cameras), len(outfits), sizes["query_images"], sizes["gallery_images"]
        )
        for cam, k in query:
            save("query", pid, person, outfits, k, cam)
        for cam, k in gallery:
            save("test", pid, person, outfits, k, cam)
    return out.finish()


def write_vcclothes(root, seed=0, **sizes):
    """Writes ``<root>/VC-Clothes/{train,query,gallery}/`` with
    ``<pid>-<camera>-<clothes>-<n>.jpg`` names, cameras 1..4: cameras 2 and 3 see a person's
    outfit 1, camera 4 outfit 2 and camera 1 its last outfit (2 or 3), so the same-clothes
    (cameras 2, 3) and clothes-changing (cameras 3, 4) test sets both have true matches.
    Test person j's queries start at camera j % 4 + 1 and go round the cameras. Returns
    counts per split ("train", "query", "gallery"). Sizes: train_ids, train_images,
    test_ids, query_images, gallery_images (per person)."""
    sizes = dataset_sizes("vcclothes", sizes)
    out = TreeWriter(root, "vcclothes", seed, sizes)
    rng = out.rng
    cameras = camera_looks(rng, "vcclothes")
    n_ids = sizes["train_ids"] + sizes["test_ids"]
    people = _people(rng, rng.permutation(np.arange(1, n_ids + 1)), 3)
    counter = {}

    def save(split, pid, person, outfits, cam):
        k = {1: len(outfits) - 1, 2: 0, 3: 0, 4: 1}[cam]
        counter[pid] = counter.get(pid, 0) + 1
        name = f"{pid:04d}-{cam:02d}-{k + 1:02d}-{counter[pid]:03d}.jpg"
        tint, scale = cameras[cam]
        out.save(split, f"{split}/{name}", person, outfits[k], pid, k, tint, scale)

    for _ in range(sizes["train_ids"]):
        pid, person, outfits = next(people)
        first = int(rng.integers(4))
        for i in range(sizes["train_images"]):
            save("train", pid, person, outfits, (first + i) % 4 + 1)
    for j in range(sizes["test_ids"]):
        pid, person, outfits = next(people)
        for i in range(sizes["query_images"]):
            save("query", pid, person, outfits, (j + i) % 4 + 1)
        first = int(rng.integers(4))
        for i in range(sizes["gallery_images"]):
            save("gallery", pid, person, outfits, (first + i) % 4 + 1)
    return out.finish()


DEEPCHANGE_SPLITS = (
    "train-set",
    "val-set-query",
    "val-set-gallery",
    "test-set-query",
    "test-set-gallery",
)


def write_deepchange(root, seed=0, **sizes):
    """Writes ``<root>/DeepChangeDataset/`` with its five split folders and their
    ``<split>-bbox.txt`` lists (``<name>,<tracklet id>``); names
    ``P<pid>_C<camera>_D<day>_F<frame>.jpg``, cameras 1..17, one day token per outfit (the
    clothes token). Each query image is a tracklet of its own; one gallery image of each test
    person is on its queries' camera in another tracklet (a true match when the tracklet is
    the camid). Returns counts per split folder. Sizes: train_ids, train_images,
    max_outfits (at least 2), val_ids, test_ids, query_images, gallery_images (per person)."""
    sizes = _outfit_sizes("deepchange", sizes)
    out = TreeWriter(root, "deepchange", seed, sizes)
    rng = out.rng
    cameras = camera_looks(rng, "deepchange")
    n_ids = sizes["train_ids"] + sizes["val_ids"] + sizes["test_ids"]
    people = _people(rng, rng.choice(9999, n_ids, replace=False) + 1, sizes["max_outfits"])
    lists = {split: [] for split in DEEPCHANGE_SPLITS}
    frames, tracklets = {}, iter(range(1, 10**9))

    def save(split, pid, person, outfits, days, k, cam, tracklet):
        frames[pid] = frames.get(pid, int(rng.integers(0, 10_000))) + int(rng.integers(1, 40))
        name = f"P{pid:04d}_C{cam:02d}_D{days[k]:03d}_F{frames[pid]:06d}.jpg"
        tint, scale = cameras[cam]
        out.save(split, f"{split}/{name}", person, outfits[k], pid, k, tint, scale)
        lists[split].append(f"{name},{tracklet}\n")

    def save_tracks(split, pid, person, outfits, days, views):
        """One tracklet per (camera, outfit) run of `views`."""
        track = {}
        for cam, k in sorted(views):
            if (cam, k) not in track:
                track[(cam, k)] = next(tracklets)
            save(split, pid, person, outfits, days, k, cam, track[(cam, k)])

    def person():
        pid, look, outfits = next(people)
        days = [int(d) for d in rng.choice(365, len(outfits), replace=False) + 1]
        return pid, look, outfits, days

    for _ in range(sizes["train_ids"]):
        pid, look, outfits, days = person()
        first = int(rng.integers(len(cameras)))
        views = [
            ((first + i // 2) % len(cameras) + 1, k)  # two images a camera
            for i, k in enumerate(spread_images(rng, sizes["train_images"], len(outfits)))
        ]
        save_tracks("train-set", pid, look, outfits, days, views)
    for split, n_ids in (("val-set", sizes["val_ids"]), ("test-set", sizes["test_ids"])):
        for _ in range(n_ids):
            pid, look, outfits, days = person()
            query, gallery = _test_views(
                rng, list(cameras), len(outfits), sizes["query_images"], sizes["gallery_images"]
            )
            for cam, k in query:
                save(f"{split}-query", pid, look, outfits, days, k, cam, next(tracklets))
            # The query's camera again, in another tracklet.
            gallery[0] = (query[0][0], gallery[0][1])
            save_tracks(f"{split}-gallery", pid, look, outfits, days, gallery)
    for split, lines in lists.items():
        with open(os.path.join(out.folder, f"{split}-bbox.txt"), "w") as f:
            f.writelines(lines)
    return out.finish()
