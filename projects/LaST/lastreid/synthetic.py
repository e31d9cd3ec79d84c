"""Synthetic stand-ins for LaST, PRCC and Celeb-reID, and for the other pre-training sources
Market-1501, DukeMTMC-reID and MSMT17, for tests and the demo.

Writes small JPEG trees (128x64, H x W) in the exact on-disk layouts and file-name
patterns the dataset modules read (see lastreid/datasets/*.py), deterministically from
a seed (same seed, same files and pixels; each dataset has its own random stream).

Each drawn person has identity cues that never change: skin tone, hair colour and
length, head size, body height and width, shoe colour and, for some, a bag of a fixed
colour and side with its strap. Each outfit has its own upper/lower colours, sleeve and
trouser length and chest pattern, so clothes are a separate factor and a
clothes-changing test is meaningful. Per image: background colour, gradient and
clutter, position and scale jitter, leg gap, brightness and colour cast, pixel noise
and JPEG quality.

- LaST: persons have 1..max_outfits outfits; the last name field is the outfit index.
  Val and test persons are disjoint from train; test query and gallery images of a
  person are spread over all of its outfits, and the test gallery has a few
  gallery-only distractor persons.
- PRCC: cameras A and B see outfit 0, camera C outfit 1; train/val/test persons are
  disjoint.
- Celeb-reID: most images of a person show a new outfit (as in the real data).
- Market-1501, DukeMTMC-reID, MSMT17 (`SOURCE_DATASETS`, not written by default): one
  outfit per person, seen by several cameras (each its own background tone and distance),
  in the released layouts and names that fastreid's own classes read (see
  lastreid/datasets/fastreid_sources.py): Market's junk (-1, not counted) and distractor
  (0) images, Duke's gallery-only persons, MSMT17's list_{train,val,query,gallery}.txt.
  Each query's camera differs from its person's gallery cameras, so every query has a
  true match left after fastreid's same-camera filter.

Re-running: a writer first deletes the dataset's own folder (``<root>/last``,
``<root>/prcc``, ``<root>/Celeb-reID``, ...) when it carries the marker file written by a
previous run, so files are never duplicated; it refuses (FileExistsError) to touch a
non-empty folder without that marker, e.g. a real dataset.
"""
import colorsys
import json
import logging
import os
import shutil

import numpy as np
from PIL import Image

from .errors import InputError

__all__ = [
    "PRESETS", "DATASETS", "SOURCE_DATASETS", "ALL_DATASETS", "IMAGE_SIZE",
    "write_last", "write_prcc", "write_celebreid", "write_market1501", "write_dukemtmc",
    "write_msmt17", "write_all", "read_counts",
]

logger = logging.getLogger(__name__)

IMAGE_SIZE = (128, 64)  # (height, width)
MARKER = ".lastreid-synthetic.json"
DATASETS = ("last", "prcc", "celebreid")  # written by default (the demo's)
SOURCE_DATASETS = ("market1501", "dukemtmc", "msmt17")  # the other pre-training sources
ALL_DATASETS = DATASETS + SOURCE_DATASETS
_FOLDERS = {"last": "last", "prcc": "prcc", "celebreid": "Celeb-reID",
            "market1501": "Market-1501-v15.09.15", "dukemtmc": "DukeMTMC-reID",
            "msmt17": "MSMT17_V1"}
# One random stream per dataset.
_STREAMS = {"last": 1, "prcc": 2, "celebreid": 3, "market1501": 4, "dukemtmc": 5, "msmt17": 6}

PRESETS = {
    "tiny": {
        "last": dict(train_ids=6, train_images=4, max_outfits=2, val_ids=3, test_ids=4,
                     query_images=1, gallery_images=3, distractor_ids=1),
        "prcc": dict(train_ids=5, val_ids=2, test_ids=4, images_per_camera=2),
        "celebreid": dict(train_ids=5, train_images=4, test_ids=4, query_images=1, gallery_images=3),
        "market1501": dict(train_ids=5, train_images=4, test_ids=4, query_images=1,
                           gallery_images=3, distractor_images=2, junk_images=2),
        "dukemtmc": dict(train_ids=5, train_images=4, test_ids=4, query_images=1,
                         gallery_images=3, distractor_ids=1),
        "msmt17": dict(train_ids=5, train_images=4, val_images=1, test_ids=4, query_images=1,
                       gallery_images=3),
    },
    "default": {
        "last": dict(train_ids=72, train_images=10, max_outfits=3, val_ids=20, test_ids=30,
                     query_images=2, gallery_images=8, distractor_ids=6),
        "prcc": dict(train_ids=60, val_ids=10, test_ids=30, images_per_camera=4),
        "celebreid": dict(train_ids=60, train_images=10, test_ids=30, query_images=2, gallery_images=8),
        "market1501": dict(train_ids=60, train_images=10, test_ids=30, query_images=2,
                           gallery_images=8, distractor_images=10, junk_images=10),
        "dukemtmc": dict(train_ids=60, train_images=10, test_ids=30, query_images=2,
                         gallery_images=8, distractor_ids=6),
        "msmt17": dict(train_ids=60, train_images=10, val_images=1, test_ids=30, query_images=2,
                       gallery_images=8),
    },
}
# Sizes that may be 0 (every split needs images; these extras are optional).
_OPTIONAL_SIZES = ("distractor_ids", "distractor_images", "junk_images")
_CAMERA_COUNTS = {"market1501": 6, "dukemtmc": 8, "msmt17": 15}


# Drawing --------------------------------------------------------------------------------

def _hsv(rng, sat, val):
    return np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(*sat), rng.uniform(*val))) * 255


def _new_person(rng):
    light, dark = np.array([238.0, 200.0, 172.0]), np.array([88.0, 58.0, 42.0])
    has_bag = rng.random() < 0.7
    return dict(
        skin=light + (dark - light) * rng.random() + rng.normal(0, 6, 3),
        hair=_hsv(rng, (0.2, 0.9), (0.12, 0.9)),
        long_hair=rng.random() < 0.4,
        head_rx=rng.uniform(7.0, 9.5),
        height=rng.uniform(0.80, 0.97),
        torso_w=rng.uniform(15.0, 24.0),
        shoes=_hsv(rng, (0.5, 1.0), (0.3, 1.0)),
        bag=_hsv(rng, (0.5, 1.0), (0.3, 1.0)) if has_bag else None,
        bag_side=rng.choice([-1, 1]),
    )


def _new_outfit(rng):
    return dict(
        upper=_hsv(rng, (0.0, 1.0), (0.15, 1.0)),
        lower=_hsv(rng, (0.0, 0.9), (0.1, 0.9)),
        pattern=rng.choice(["plain", "stripes", "band"]),
        pattern_colour=_hsv(rng, (0.0, 1.0), (0.2, 1.0)),
        long_sleeves=rng.random() < 0.5,
        long_trousers=rng.random() < 0.7,
    )


def _rect(canvas, y0, y1, x0, x1, colour):
    h, w, _ = canvas.shape
    y0, y1 = max(int(round(y0)), 0), min(int(round(y1)), h)
    x0, x1 = max(int(round(x0)), 0), min(int(round(x1)), w)
    if y0 < y1 and x0 < x1:
        canvas[y0:y1, x0:x1] = colour


def _ellipse(canvas, cy, cx, ry, rx, colour, below=None):
    """Fills an ellipse; with `below`, only its rows above y = below (a hair cap)."""
    ys, xs = np.ogrid[: canvas.shape[0], : canvas.shape[1]]
    mask = ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 <= 1.0
    if below is not None:
        mask = mask & (ys < below)
    canvas[mask] = colour


def _background(rng, tint):
    h, w = IMAGE_SIZE
    base = _hsv(rng, (0.0, 0.4), (0.3, 0.9)) if tint is None else tint + rng.normal(0, 12, 3)
    ramp = np.linspace(-1, 1, h)[:, None, None] * rng.uniform(-25, 25)
    canvas = np.broadcast_to(base + ramp, (h, w, 3)).copy()
    for _ in range(rng.integers(0, 3)):  # faint clutter behind the person
        y, x = rng.uniform(0, h), rng.uniform(0, w)
        _rect(canvas, y, y + rng.uniform(8, 40), x, x + rng.uniform(6, 24),
              0.5 * canvas[min(int(y), h - 1), min(int(x), w - 1)] + 0.5 * _hsv(rng, (0, 0.6), (0.2, 1)))
    return canvas


def _render(person, outfit, rng, tint=None, scale=1.0):
    """One 128x64 RGB uint8 image of `person` wearing `outfit`."""
    h, w = IMAGE_SIZE
    canvas = _background(rng, tint)
    s = scale * rng.uniform(0.92, 1.06)
    hp = person["height"] * (h - 8) * s
    top = (h - hp) / 2 + rng.uniform(-4, 4)
    cx = w / 2 + rng.uniform(-5, 5)
    y = lambda frac: top + frac * hp  # noqa: E731  (body proportions as fractions of height)
    tw, rx = person["torso_w"] * s, person["head_rx"] * s
    skin, upper, lower = person["skin"], outfit["upper"], outfit["lower"]

    # Legs, shoes (identity colour), with a per-image walking gap.
    gap = rng.uniform(1, 4)
    knee = y(0.96) if outfit["long_trousers"] else y(0.68)
    for x0, x1 in ((cx - tw / 2 + 1, cx - gap / 2), (cx + gap / 2, cx + tw / 2 - 1)):
        _rect(canvas, y(0.52), knee, x0, x1, lower)
        _rect(canvas, knee, y(0.96), x0, x1, skin)
        _rect(canvas, y(0.94), y(1.0), x0 - 1.5, x1 + 1.5, person["shoes"])
    # Arms and hands, sleeves by outfit.
    elbow = y(0.48) if outfit["long_sleeves"] else y(0.28)
    for x0, x1 in ((cx - tw / 2 - 4 * s, cx - tw / 2), (cx + tw / 2, cx + tw / 2 + 4 * s)):
        _rect(canvas, y(0.19), elbow, x0, x1, upper)
        _rect(canvas, elbow, y(0.53), x0, x1, skin)
    # Torso with the outfit's chest pattern.
    _rect(canvas, y(0.18), y(0.53), cx - tw / 2, cx + tw / 2, upper)
    if outfit["pattern"] == "stripes":
        for yy in np.arange(y(0.22), y(0.50), 5.0):
            _rect(canvas, yy, yy + 2, cx - tw / 2, cx + tw / 2, outfit["pattern_colour"])
    elif outfit["pattern"] == "band":
        _rect(canvas, y(0.29), y(0.35), cx - tw / 2, cx + tw / 2, outfit["pattern_colour"])
    # Head: face, neck and hair cap; long hair falls beside the neck onto the shoulders.
    cy, ry = y(0.085), 0.085 * hp
    _rect(canvas, y(0.15), y(0.19), cx - 2.5, cx + 2.5, skin)
    _ellipse(canvas, cy, cx, ry, rx, skin)
    _ellipse(canvas, cy, cx, ry * 1.08, rx * 1.08, person["hair"], below=cy + 0.1 * ry)
    if person["long_hair"]:
        for x0 in (cx - rx - 1, cx + rx - 3):
            _rect(canvas, cy, y(0.30), x0, x0 + 4, person["hair"])
    # Bag on a fixed side with a strap across the chest.
    if person["bag"] is not None:
        side = person["bag_side"]
        bx = cx + side * (tw / 2 + 3 * s)
        _rect(canvas, y(0.34), y(0.58), bx - 5 * s, bx + 5 * s, person["bag"])
        for t in np.linspace(0, 1, 14):
            sy, sx = y(0.19) + t * (y(0.36) - y(0.19)), cx - side * tw / 2 + t * side * tw
            _rect(canvas, sy, sy + 2, sx - 1, sx + 1, person["bag"])

    # Lighting and sensor noise.
    canvas = canvas * rng.uniform(0.75, 1.25) * rng.uniform(0.92, 1.08, 3)
    canvas += rng.normal(0, 5, canvas.shape)
    return np.clip(canvas, 0, 255).astype(np.uint8)


# Writing --------------------------------------------------------------------------------

class _Writer:
    """Writes one dataset's images and tallies ids / outfits / images per split."""

    def __init__(self, root, dataset, seed, sizes):
        self.folder = os.path.join(root, _FOLDERS[dataset])
        self.rng = np.random.default_rng([seed, _STREAMS[dataset]])
        self.meta = dict(dataset=dataset, seed=seed, sizes=sizes)
        self.splits = {}
        _clear_own_folder(self.folder)
        # Marker first: a run that fails half-way leaves a folder the next run may replace.
        self._write_marker(counts=None)

    def save(self, split, relpath, person, outfit, pid, outfit_key, tint=None, scale=1.0,
             counted=True):
        """Writes one image; `counted=False` leaves it out of the counts (Market's junk)."""
        path = os.path.join(self.folder, relpath)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        pixels = _render(person, outfit, self.rng, tint, scale)
        Image.fromarray(pixels).save(path, quality=int(self.rng.integers(70, 96)))
        if not counted:
            return
        tally = self.splits.setdefault(split, dict(ids=set(), outfits=set(), images=0))
        tally["ids"].add(pid)
        tally["outfits"].add((pid, outfit_key))
        tally["images"] += 1

    def _write_marker(self, counts):
        with open(os.path.join(self.folder, MARKER), "w") as f:
            json.dump(dict(self.meta, counts=counts), f, indent=1, sort_keys=True)

    def finish(self):
        counts = {
            split: dict(ids=len(t["ids"]), outfits=len(t["outfits"]), images=t["images"])
            for split, t in self.splits.items()
        }
        self._write_marker(counts)
        logger.info("wrote synthetic %s to %s: %s", self.meta["dataset"], self.folder, counts)
        return counts


def _clear_own_folder(folder):
    if os.path.isdir(folder) and os.listdir(folder):
        if not os.path.isfile(os.path.join(folder, MARKER)):
            raise FileExistsError(
                f"{folder} exists and was not written by lastreid.synthetic; not overwriting it"
            )
        shutil.rmtree(folder)
    os.makedirs(folder, exist_ok=True)


def _sizes(dataset, sizes):
    unknown = set(sizes) - set(PRESETS["default"][dataset])
    if unknown:
        raise TypeError(f"unknown {dataset} size(s) {sorted(unknown)}; known: {sorted(PRESETS['default'][dataset])}")
    sizes = {**PRESETS["default"][dataset], **sizes}
    for key, value in sizes.items():
        # Every split needs images; only the distractor persons are optional.
        if not isinstance(value, int) or value < (0 if key in _OPTIONAL_SIZES else 1):
            raise InputError(f"{dataset} size {key}={value!r} must be a positive integer")
    return sizes


def _spread(rng, n_images, n_outfits):
    """Outfit index per image, covering every outfit when there are enough images."""
    order = list(rng.permutation(n_outfits)) * (n_images // n_outfits + 1)
    return [int(k) for k in order[:n_images]]


def write_last(root, seed=0, **sizes):
    """Writes ``<root>/last`` (see the module docstring); returns counts per split
    (``{"train": {"ids", "outfits", "images"}, "val/query": ..., "test/gallery": ...}``).
    Sizes (default preset unless given): train_ids, train_images (per person),
    max_outfits, val_ids, test_ids, query_images and gallery_images (per person),
    distractor_ids (test-gallery-only persons)."""
    sizes = _sizes("last", sizes)
    out = _Writer(root, "last", seed, sizes)
    rng = out.rng
    n_ids = sizes["train_ids"] + sizes["val_ids"] + sizes["test_ids"] + sizes["distractor_ids"]
    pids = iter(int(p) for p in rng.choice(999_999, n_ids, replace=False) + 1)

    def person_with_outfits():
        pid = next(pids)
        n_outfits = int(rng.integers(1, sizes["max_outfits"] + 1))
        return pid, _new_person(rng), [_new_outfit(rng) for _ in range(n_outfits)]

    frame = {}

    def save(split, subdir, pid, person, outfits, k):
        # <pid>_<scene>_<frame>_<track>_<shot>_<outfit>: frames count up per person so names are unique
        frame[pid] = frame.get(pid, int(rng.integers(0, 50_000))) + int(rng.integers(1, 40))
        name = (f"{pid:06d}_{int(rng.integers(0, 1000)):03d}_{frame[pid]:05d}_"
                f"{int(rng.integers(0, 10_000)):04d}_{int(rng.integers(0, 100)):02d}_{k:03d}.jpg")
        out.save(split, os.path.join(subdir, name), person, outfits[k], pid, k)

    for _ in range(sizes["train_ids"]):
        pid, person, outfits = person_with_outfits()
        for k in _spread(rng, sizes["train_images"], len(outfits)):
            save("train", f"train/{pid:06d}", pid, person, outfits, k)
    for split, n_ids in (("val", sizes["val_ids"]), ("test", sizes["test_ids"])):
        for _ in range(n_ids):
            pid, person, outfits = person_with_outfits()
            for _ in range(sizes["query_images"]):
                save(f"{split}/query", f"{split}/query", pid, person, outfits, int(rng.integers(len(outfits))))
            for k in _spread(rng, sizes["gallery_images"], len(outfits)):
                save(f"{split}/gallery", f"{split}/gallery/{pid:06d}", pid, person, outfits, k)
    for _ in range(sizes["distractor_ids"]):
        pid, person, outfits = person_with_outfits()
        for k in _spread(rng, sizes["gallery_images"], len(outfits)):
            save("test/gallery", f"test/gallery/{pid:06d}", pid, person, outfits, k)
    return out.finish()


def write_prcc(root, seed=0, **sizes):
    """Writes ``<root>/prcc/rgb`` (train, val, test/A|B|C); returns counts per split
    (keys "train", "val", "test/A", "test/B", "test/C"). Sizes: train_ids, val_ids,
    test_ids, images_per_camera (per person and camera)."""
    sizes = _sizes("prcc", sizes)
    out = _Writer(root, "prcc", seed, sizes)
    rng = out.rng
    # Each camera has its own background tone and viewing distance.
    cameras = {cam: (_hsv(rng, (0.0, 0.4), (0.35, 0.85)), rng.uniform(0.9, 1.05)) for cam in "ABC"}
    n_ids = sizes["train_ids"] + sizes["val_ids"] + sizes["test_ids"]
    pids = iter(int(p) for p in rng.permutation(np.arange(1, n_ids + 1)))
    for split, n_split in (("train", sizes["train_ids"]), ("val", sizes["val_ids"]), ("test", sizes["test_ids"])):
        for _ in range(n_split):
            pid, person = next(pids), _new_person(rng)
            outfits = [_new_outfit(rng), _new_outfit(rng)]
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
    sizes = _sizes("celebreid", sizes)
    out = _Writer(root, "celebreid", seed, sizes)
    rng = out.rng
    n_train = sizes["train_ids"]
    plan = [("train", sizes["train_images"], 0)] * n_train + \
        [("test", sizes["query_images"] + sizes["gallery_images"], sizes["query_images"])] * sizes["test_ids"]
    for pid, (split, n_images, n_query) in enumerate(plan, start=1):
        person, outfits = _new_person(rng), []
        for n in range(1, n_images + 1):
            if not outfits or rng.random() < 0.7:  # most snapshots show new clothes
                outfits.append(_new_outfit(rng))
                k = len(outfits) - 1
            else:
                k = int(rng.integers(len(outfits)))
            folder = split if split == "train" else ("query" if n <= n_query else "gallery")
            name = f"{pid}_{n}_{int(rng.integers(0, 2))}.jpg"
            out.save(folder, f"{folder}/{name}", person, outfits[k], pid, k)
    return out.finish()


def _cameras(rng, dataset):
    """(background tint, scale) per camera number 1..N."""
    return {cam: (_hsv(rng, (0.0, 0.4), (0.35, 0.85)), rng.uniform(0.9, 1.05))
            for cam in range(1, _CAMERA_COUNTS[dataset] + 1)}


def _test_cameras(rng, cameras, n_query, n_gallery):
    """Query cameras (one camera) and gallery cameras (the others) of a test person."""
    query_cam = int(rng.choice(list(cameras)))
    others = [c for c in cameras if c != query_cam]
    return [query_cam] * n_query, [others[i % len(others)] for i in range(n_gallery)]


def _write_bounding_boxes(root, dataset, seed, sizes, name_of, max_pid):
    """Market-1501 / DukeMTMC-reID: bounding_box_train, query and bounding_box_test."""
    out = _Writer(root, dataset, seed, sizes)
    rng = out.rng
    cameras = _cameras(rng, dataset)
    n_ids = sizes["train_ids"] + sizes["test_ids"] + sizes.get("distractor_ids", 0)
    pids = iter(int(p) for p in rng.choice(max_pid, n_ids, replace=False) + 1)
    frames = {}

    def save(folder, tally, pid, person, outfit, cam, counted=True):
        frames[pid] = frames.get(pid, int(rng.integers(0, 1000))) + int(rng.integers(1, 50))
        tint, scale = cameras[cam]
        out.save(tally, os.path.join(folder, name_of(pid, cam, frames[pid], rng)), person, outfit,
                 pid, 0, tint, scale, counted=counted)

    for _ in range(sizes["train_ids"]):
        pid, person, outfit = next(pids), _new_person(rng), _new_outfit(rng)
        first = int(rng.integers(1, len(cameras) + 1))
        for i in range(sizes["train_images"]):  # at least two cameras per person
            cam = (first + i - 1) % len(cameras) + 1
            save("bounding_box_train", "train", pid, person, outfit, cam)
    for _ in range(sizes["test_ids"]):
        pid, person, outfit = next(pids), _new_person(rng), _new_outfit(rng)
        query_cams, gallery_cams = _test_cameras(rng, cameras, sizes["query_images"],
                                                 sizes["gallery_images"])
        for cam in query_cams:
            save("query", "query", pid, person, outfit, cam)
        for cam in gallery_cams:
            save("bounding_box_test", "gallery", pid, person, outfit, cam)
    for _ in range(sizes.get("distractor_ids", 0)):  # Duke: gallery-only persons
        pid, person, outfit = next(pids), _new_person(rng), _new_outfit(rng)
        for _ in range(sizes["gallery_images"]):
            cam = int(rng.choice(list(cameras)))
            save("bounding_box_test", "gallery", pid, person, outfit, cam)
    # Market: distractors (pid 0, kept by fastreid) and junk (pid -1, skipped) in the gallery.
    for pid, key, counted in ((0, "distractor_images", True), (-1, "junk_images", False)):
        for _ in range(sizes.get(key, 0)):
            save("bounding_box_test", "gallery", pid, _new_person(rng), _new_outfit(rng),
                 int(rng.choice(list(cameras))), counted=counted)
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
    return _write_bounding_boxes(root, "market1501", seed, _sizes("market1501", sizes),
                                 _market_name, 1501)


def write_dukemtmc(root, seed=0, **sizes):
    """Writes ``<root>/DukeMTMC-reID/{bounding_box_train,query,bounding_box_test}`` with
    ``NNNN_cC_fFFFFFFF.jpg`` names, cameras c1..c8; returns counts per split. Sizes:
    train_ids, train_images, test_ids, query_images, gallery_images, distractor_ids
    (gallery-only persons)."""
    return _write_bounding_boxes(root, "dukemtmc", seed, _sizes("dukemtmc", sizes),
                                 _duke_name, 7140)


def write_msmt17(root, seed=0, **sizes):
    """Writes ``<root>/MSMT17_V1/{train,test}/<pid>/*.jpg`` and its
    ``list_{train,val,query,gallery}.txt`` (lines ``<pid>/<file>.jpg <label>``; file names
    ``<pid>_<idx>_<camera>_<time>_<n>_<k>.jpg``, cameras 01..15); returns counts per split
    ("train", "val", "query", "gallery"). Sizes: train_ids, train_images and val_images
    (per train person), test_ids, query_images, gallery_images."""
    sizes = _sizes("msmt17", sizes)
    out = _Writer(root, "msmt17", seed, sizes)
    rng = out.rng
    cameras = _cameras(rng, "msmt17")
    lists = {split: [] for split in ("train", "val", "query", "gallery")}
    index = {}

    def save(split, folder, label, person, outfit, cam):
        index[(folder, label)] = index.get((folder, label), -1) + 1
        time_of_day = ("morning", "noon", "afternoon")[int(rng.integers(3))]
        rel = (f"{label:04d}/{label:04d}_{index[(folder, label)]:03d}_{cam:02d}_0303{time_of_day}_"
               f"{int(rng.integers(0, 10_000)):04d}_{int(rng.integers(0, 2))}.jpg")
        tint, scale = cameras[cam]
        out.save(split, os.path.join(folder, rel), person, outfit, label, 0, tint, scale)
        lists[split].append(f"{rel} {label}\n")

    for label in range(sizes["train_ids"]):
        person, outfit = _new_person(rng), _new_outfit(rng)
        first = int(rng.integers(1, len(cameras) + 1))
        n = sizes["train_images"] + sizes["val_images"]
        for i in range(n):
            split = "train" if i < sizes["train_images"] else "val"
            save(split, "train", label, person, outfit, (first + i - 1) % len(cameras) + 1)
    for label in range(sizes["test_ids"]):
        person, outfit = _new_person(rng), _new_outfit(rng)
        query_cams, gallery_cams = _test_cameras(rng, cameras, sizes["query_images"],
                                                 sizes["gallery_images"])
        for cam in query_cams:
            save("query", "test", label, person, outfit, cam)
        for cam in gallery_cams:
            save("gallery", "test", label, person, outfit, cam)
    for split, lines in lists.items():
        with open(os.path.join(out.folder, f"list_{split}.txt"), "w") as f:
            f.writelines(lines)
    return out.finish()


_WRITERS = {"last": write_last, "prcc": write_prcc, "celebreid": write_celebreid,
            "market1501": write_market1501, "dukemtmc": write_dukemtmc, "msmt17": write_msmt17}


def write_all(root, preset="default", seed=0, datasets=DATASETS, **sizes):
    """Writes the `preset` ("tiny" or "default") of each of `datasets` (default: LaST, PRCC
    and Celeb-reID; any of ALL_DATASETS) under `root`;
    size keywords override the preset for every dataset that has that size.
    Returns {dataset: counts per split}."""
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    unknown = set(sizes) - {key for d in datasets for key in PRESETS[preset][d]}
    if unknown:
        raise TypeError(f"unknown size(s) {sorted(unknown)} for datasets {list(datasets)}")
    counts = {}
    for dataset in datasets:
        preset_sizes = PRESETS[preset][dataset]
        chosen = {**preset_sizes, **{k: v for k, v in sizes.items() if k in preset_sizes}}
        counts[dataset] = _WRITERS[dataset](root, seed=seed, **chosen)
    return counts


def read_counts(root):
    """The counts reported by the last write of each synthetic dataset found under
    `root` (read from the marker files), as {dataset: counts per split}; datasets whose
    last write did not finish are left out."""
    counts = {}
    for dataset, folder in _FOLDERS.items():
        marker = os.path.join(root, folder, MARKER)
        if os.path.isfile(marker):
            with open(marker) as f:
                written = json.load(f)["counts"]
            if written is not None:
                counts[dataset] = written
    return counts
