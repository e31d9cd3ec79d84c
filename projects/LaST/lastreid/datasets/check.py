"""Checks a dataset tree file by file: counts per split next to the documented statistics
(and, for datasets with clothes labels, the number of (person, outfit) clothes keys), every
file name or list line the dataset's parser rejects, and every image that does not decode.
Knows every dataset lastreid registers (LaST, PRCC, Celeb-reID, LTCC, DeepChange,
VC-Clothes and their protocol variants) and fastreid's Market1501 / DukeMTMC / MSMT17.

Unlike building the dataset (which stops at the first `DatasetLayoutError`), the check
walks each split folder itself, applies the dataset module's own name parser to every
image file and collects all problems. `check_dataset` returns a `CheckReport`;
`tools/check_dataset.py` is the command line.
"""

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from fastreid.data.datasets import DATASET_REGISTRY
from PIL import Image
from tqdm import tqdm

from ..errors import ConfigKeyError
from . import LASTREID_DATASETS, datasets_root, fastreid_sources
from .common import DatasetLayoutError, is_image_file
from .synthetic import read_counts

__all__ = ["CHECKABLE", "CheckReport", "SplitCount", "check_dataset", "decode_problem"]


# Dataset name -> lastreid.datasets.synthetic's name for its tree: ours from their classes,
# fastreid's own (walked by fastreid_sources.split_entries) by name.
CHECKABLE = {
    **{name: DATASET_REGISTRY.get(name).SYNTHETIC_KEY for name in LASTREID_DATASETS},
    **{name: name.lower() for name in fastreid_sources.SOURCE_DATASETS},
}


@dataclass
class SplitCount:
    split: str
    folder: str
    ids: int = 0
    images: int = 0
    expected: Optional[Dict[str, int]] = None  # {"ids", "images"[, "classes"]} or None
    # Training classes where they are not the person ids (LaSTClothes: person x outfit).
    classes: Optional[int] = None
    # Clothes keys (person x outfit) of a dataset with clothes labels (HAS_CLOTHES).
    clothes: Optional[int] = None

    @property
    def matches(self):
        if self.expected is None:
            return True
        found = dict(ids=self.ids, images=self.images, classes=self.classes, clothes=self.clothes)
        return all(found[key] == value for key, value in self.expected.items())


@dataclass
class CheckReport:
    dataset: str
    root: str
    expected_from: str = "documented"  # or "synthetic generator"
    splits: List[SplitCount] = field(default_factory=list)
    missing: List[str] = field(default_factory=list)  # split folders not found / empty
    bad_names: List[Tuple[str, str]] = field(default_factory=list)  # (path, reason)
    bad_images: List[Tuple[str, str]] = field(default_factory=list)  # (path, reason)
    decoded: bool = True

    @property
    def count_mismatches(self):
        return [s for s in self.splits if not s.matches]

    def problems(self, strict=False):
        n = len(self.missing) + len(self.bad_names) + len(self.bad_images)
        return n + (len(self.count_mismatches) if strict else 0)

    def format(self, strict=False):
        lines = [f"{self.dataset} under {self.root} (expected counts: {self.expected_from})"]
        width = max([14] + [len(s.split) + 2 for s in self.splits])  # DeepChange's long names
        lines.append(
            f"  {'split':<{width}}{'ids':>8}{'images':>10}   {'expected ids':>12}{'images':>10}"
        )
        for s in self.splits:
            row = f"  {s.split:<{width}}{s.ids:>8,}{s.images:>10,}"
            if s.expected is not None:
                row += f"   {s.expected['ids']:>12,}{s.expected['images']:>10,}"
                row += "  ok" if s.matches else "  DIFFERS"
            lines.append(row)
            if s.classes is not None:
                known = (s.expected or {}).get("classes")
                verdict = "" if known is None else f", expected {known:,}"
                if known is not None:
                    verdict += "  ok" if known == s.classes else "  DIFFERS"
                lines.append(f"    {s.classes:,} training classes (person x outfit){verdict}")
            if s.clothes is not None:
                known = (s.expected or {}).get("clothes")
                verdict = "" if known is None else f", expected {known:,}"
                if known is not None:
                    verdict += "  ok" if known == s.clothes else "  DIFFERS"
                lines.append(f"    {s.clothes:,} clothes (person x outfit){verdict}")
        for folder in self.missing:
            lines.append(f"  missing split: {folder}")
        if self.bad_names:
            lines.append(f"  {len(self.bad_names)} file name(s) that do not parse:")
            lines += [f"    {path}: {reason}" for path, reason in self.bad_names]
        if self.bad_images:
            lines.append(f"  {len(self.bad_images)} image(s) that cannot be decoded:")
            lines += [f"    {path}: {reason}" for path, reason in self.bad_images]
        if not self.decoded:
            lines.append("  (images not decoded: --no-decode)")
        n = self.problems(strict)
        if self.count_mismatches and not strict:
            lines.append(
                f"  counts differ from the {self.expected_from} statistics for "
                f"{len(self.count_mismatches)} split(s) (a problem with --strict)"
            )
        lines.append(f"  {n} problem(s)" if n else "  no problems")
        return "\n".join(lines)


def decode_problem(path):
    """None if the image decodes fully, else a one-line reason."""
    try:
        with Image.open(path) as image:
            image.load()  # the whole decode: truncated files fail here, not at open()
            if image.size[0] < 1 or image.size[1] < 1:
                return "empty image"
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, ... on bad data
        text = " ".join(str(e).split()) or "unreadable"
        return f"{type(e).__name__}: {text}"
    return None


def _without_path(reason, path):
    """The reason without the path it repeats (the report prints the path first)."""
    return reason.replace(f" {path!r}", "").replace(f": {path}", "")


def _walk(folder, recursive):
    if recursive:
        return sorted(
            os.path.join(d, n) for d, _, names in os.walk(folder) for n in names if is_image_file(n)
        )
    return sorted(e.path for e in os.scandir(folder) if e.is_file() and is_image_file(e.name))


def _class_reader(cls, split):
    """path -> training class of a split whose classes are not its person ids, else None
    (the dataset class's `class_reader`, where it has one: LaSTClothes)."""
    reader = getattr(cls, "class_reader", None)
    return reader(split) if reader is not None else None


def _clothes_reader(cls, split):
    """path -> clothes key of a split of a dataset with clothes labels, else None; None too
    where the split's training classes already are its clothes (LaSTClothes' train)."""
    if not getattr(cls, "HAS_CLOTHES", False) or _class_reader(cls, split) is not None:
        return None
    return cls.clothes_reader(split)


def _synthetic_expected(counts, with_classes, with_clothes):
    """The expected counts of a split from the generator's tally; its (person, outfit)
    pairs are the training classes of a dataset that trains on clothes, and the clothes
    keys of a dataset with clothes labels."""
    expected = {"ids": counts["ids"], "images": counts["images"]}
    if with_classes:
        expected["classes"] = counts["outfits"]
    if with_clothes:
        expected["clothes"] = counts["outfits"]
    return expected


def _split_paths(cls, base, split, recursive):
    """(image paths of a split, [(path or list line, reason)]): the folder walked, or the
    split's own list where the dataset reads one (`split_listing`: DeepChange)."""
    folder = os.path.join(base, split)
    lister = getattr(cls, "split_listing", None)
    if lister is not None:
        try:
            return lister(base, split)
        except DatasetLayoutError as e:  # no folder or no list: reported as missing
            return [], [(e.path, None)]
    return (_walk(folder, recursive) if os.path.isdir(folder) else []), []


def _synthetic_counts(root, key):
    try:
        return read_counts(root).get(key)
    except (OSError, ValueError, KeyError):
        return None


def check_dataset(name, root=None, decode=True, workers=None, progress=True):
    """Walks the split folders of the registered dataset `name` under `root` (default
    $FASTREID_DATASETS, else "datasets") and returns a CheckReport. The expected counts
    are the class's DOCUMENTED statistics, or, for a tree written by
    `lastreid.datasets.synthetic` (its marker file is there), what the generator wrote."""
    if name not in CHECKABLE:
        raise ConfigKeyError(f"cannot check {name!r}; checkable: {', '.join(CHECKABLE)}")
    root = datasets_root(root)
    if name in fastreid_sources.SOURCE_DATASETS:
        return _check_source(name, root, decode, workers, progress)
    cls = DATASET_REGISTRY.get(name)
    base = os.path.join(root, cls.dataset_dir)
    report = CheckReport(dataset=name, root=base, decoded=decode)
    expected = dict(cls.DOCUMENTED)
    synthetic = _synthetic_counts(root, CHECKABLE[name])
    if synthetic is not None:
        report.expected_from = "synthetic generator (marker file)"
        expected = {
            split: _synthetic_expected(
                c,
                _class_reader(cls, split) is not None,
                _clothes_reader(cls, split) is not None,
            )
            for split, c in synthetic.items()
            if split in expected
        }

    to_decode = []
    for split in cls.DOCUMENTED:
        folder = os.path.join(base, split)
        count = SplitCount(split, folder, expected=expected.get(split))
        report.splits.append(count)
        recursive, parse_pid = cls.split_reader(split)
        paths, problems = _split_paths(cls, base, split, recursive)
        missing = [where for where, reason in problems if reason is None]
        report.bad_names += [
            (where, _without_path(reason, where)) for where, reason in problems if reason
        ]
        if not paths:
            if missing:
                report.missing.append(f"not found: {missing[0]}")
            else:
                why = "no images in" if os.path.isdir(folder) else "folder not found:"
                report.missing.append(f"{why} {folder}")
            continue
        class_of, clothes_of = _class_reader(cls, split), _clothes_reader(cls, split)
        pids, classes, clothes = set(), set(), set()
        for path in paths:
            try:
                pids.add(parse_pid(path))
                if class_of is not None:
                    classes.add(class_of(path))
                if clothes_of is not None:
                    clothes.add(clothes_of(path))
            except DatasetLayoutError as e:
                report.bad_names.append((path, _without_path(str(e), path)))
        count.ids, count.images = len(pids), len(paths)
        count.classes = len(classes) if class_of is not None else None
        count.clothes = len(clothes) if clothes_of is not None else None
        to_decode += paths

    if decode and to_decode:
        for path, reason in zip(to_decode, _decode_all(to_decode, workers, progress, name)):
            if reason is not None:
                report.bad_images.append((path, _without_path(reason, path)))
    return report


def _check_source(name, root, decode, workers, progress):
    """check_dataset for fastreid's Market1501 / DukeMTMC / MSMT17: counts as fastreid
    reads them (Market's junk pid -1 left out), every name or list line it would trip on."""
    report = CheckReport(dataset=name, root=root, decoded=decode)
    expected = dict(fastreid_sources.DOCUMENTED[name])
    synthetic = _synthetic_counts(root, CHECKABLE[name])
    if synthetic is not None:
        report.expected_from = "synthetic generator (marker file)"
        expected = {
            split: {"ids": c["ids"], "images": c["images"]} for split, c in synthetic.items()
        }
    try:
        splits = fastreid_sources.split_entries(name, root)
    except DatasetLayoutError as e:
        report.missing.append(str(e))
        return report
    to_decode = []
    for split, (where, entries) in splits.items():
        count = SplitCount(split, where, expected=expected.get(split))
        report.splits.append(count)
        kept = [
            (path, pid)
            for path, pid, problem in entries
            if problem is None and pid != fastreid_sources.JUNK
        ]
        for path, _, problem in entries:
            if problem is not None:
                report.bad_names.append((path, _without_path(str(problem), path)))
        if not kept and split != "val":
            report.missing.append(f"no images in {where}")
        count.ids, count.images = len({pid for _, pid in kept}), len(kept)
        to_decode += [path for path, _ in kept]
    if decode and to_decode:
        for path, reason in zip(to_decode, _decode_all(to_decode, workers, progress, name)):
            if reason is not None:
                report.bad_images.append((path, _without_path(reason, path)))
    return report


def _decode_all(paths, workers, progress, name):
    """decode_problem of every path, in order, on a few threads (PIL's decoders release
    the GIL), with a tqdm bar."""
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(decode_problem, paths, chunksize=64)
        if progress:
            results = tqdm(
                results, total=len(paths), desc=f"decoding {name}", unit="img", dynamic_ncols=True
            )
        return list(results)
