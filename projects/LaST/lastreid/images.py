"""Reading re-id images so that a bad file is named: `ReidImageDataset` (fastreid's
`CommDataset`) raises one `BadImageError` naming the file, also across DataLoader workers, or
with `DATALOADER.SKIP_BAD_IMAGES` replaces a bad training image by one of the same person
(test images are screened up front by `drop_unreadable`). docs/training.md: Errors.
"""

import logging
import os
import random
import re
from concurrent.futures import ThreadPoolExecutor

import torch

from fastreid.data.common import CommDataset
from fastreid.data.data_utils import read_image

from .errors import InputError, LastreidError, one_line
from .randomness import seeded

logger = logging.getLogger(__name__)

__all__ = ["BadImageError", "ReidImageDataset", "drop_unreadable", "load_image"]

# How many other images a training item may try before giving up.
MAX_SUBSTITUTES = 50

_REWRAPPED = re.compile(r"Caught BadImageError (in DataLoader worker process \d+)")
_PATH_IN_MESSAGE = re.compile(r"^cannot (?:decode|read) (.+?): ")


class BadImageError(LastreidError, RuntimeError):
    """An image file that cannot be read or decoded; the message (one line) names it.

    `path` is the file. PyTorch re-raises a worker's exception as `type(exc)(message with the
    worker's traceback)`: constructed from such a message, it keeps only the original line
    and says which worker saw it."""

    def __init__(self, message, path=None):
        where = _REWRAPPED.match(message)
        if where:
            last = message.rstrip().splitlines()[-1]
            message = last.split("BadImageError: ", 1)[-1] + f" ({where.group(1)})"
        if path is None:
            found = _PATH_IN_MESSAGE.match(message)
            path = found.group(1) if found else None
        super().__init__(message)
        self.path = path

    def __reduce__(self):
        return type(self), (str(self), self.path)


def _one_line(text, limit=300):
    # PIL repeats the path as a file repr.
    text = re.sub(r" ?<_io\.\w+ name=.*?>", "", one_line(text))
    return one_line(text, limit)


def load_image(path):
    """fastreid's `read_image(path)` (a fully decoded PIL RGB image), or `BadImageError`."""
    try:
        return read_image(path)
    except MemoryError:
        raise
    except OSError as e:
        if not os.path.isfile(path):  # missing, a folder, ...: not a decoding problem
            raise BadImageError(
                f"cannot read {path}: {type(e).__name__}: {_one_line(e.strerror or e)}", path
            ) from e
        raise BadImageError(
            f"cannot decode {path}: {type(e).__name__}: {_one_line(e)}", path
        ) from e
    except Exception as e:  # PIL also raises SyntaxError, ValueError, struct.error, ...
        raise BadImageError(
            f"cannot decode {path}: {type(e).__name__}: {_one_line(e)}", path
        ) from e


class ReidImageDataset(CommDataset):
    """`CommDataset` whose images are read with `load_image` (see the module docstring).

    `skip_bad_images=True` (training sets only) replaces an unreadable item by another one;
    `bad_images` maps each file skipped by this process to its reason. An index may come
    with the seed of its augmentation, `(index, seed)` (randomness.TrainBatches).

    `clothes` (training sets): a clothes key per item, parallel to `img_items`; each item
    then carries its clothes class `clothes` (contiguous over the sorted keys), and the set
    has `num_clothes`, `clothes_pids` (each clothes class's identity label) and `pid2clothes`
    (num_classes x num_clothes, 1 where the clothes class is the identity's)."""

    def __init__(
        self, img_items, transform=None, relabel=True, skip_bad_images=False, clothes=None
    ):
        super().__init__(img_items, transform, relabel)
        self.skip_bad_images = bool(skip_bad_images)
        self.bad_images = {}
        self._by_pid = None
        self.clothes_labels = None
        if clothes is not None:
            self._label_clothes(clothes)

    def _label_clothes(self, keys):
        if len(keys) != len(self.img_items) or not self.relabel:
            raise ValueError("clothes keys must be parallel to the relabelled training items")
        classes = sorted(set(keys))
        label = {key: i for i, key in enumerate(classes)}
        self.clothes_labels = [label[key] for key in keys]
        owner = {}  # clothes class -> identity label; a class belongs to one identity
        for item, key in zip(self.img_items, keys):
            pid = self.pid_dict[item[1]]
            if owner.setdefault(label[key], pid) != pid:
                raise InputError(
                    f"clothes key {key!r} is shared by two identities ({item[1]} and "
                    f"{self.pids[owner[label[key]]]}): a clothes class must be one person's"
                )
        self.clothes_pids = torch.tensor([owner[i] for i in range(len(classes))])

    @property
    def num_clothes(self):
        return 0 if self.clothes_labels is None else len(self.clothes_pids)

    @property
    def pid2clothes(self):
        """(num_classes x num_clothes) 0/1 tensor: 1 where the clothes class is the identity's."""
        return (
            torch.arange(self.num_classes)[:, None] == self.clothes_pids[None, :]
        ).to(torch.float32)

    def __getitem__(self, index):
        if isinstance(index, tuple):  # (index, augmentation seed): randomness.TrainBatches
            index, seed = index
            with seeded(seed):
                return self[index]
        if not self.skip_bad_images:
            return self._item(index)
        if self.img_items[index][0] in self.bad_images:  # known bad: no second warning
            return self._substitute(index)
        try:
            return self._item(index)
        except BadImageError as e:
            self._skipped(e)
            return self._substitute(index)

    def _item(self, index):
        path, pid, camid = self.img_items[index][:3]
        img = load_image(path)
        if self.transform is not None:
            img = self.transform(img)
        if self.relabel:
            pid = self.pid_dict[pid]
            camid = self.cam_dict[camid]
        item = {"images": img, "targets": pid, "camids": camid, "img_paths": path}
        if self.clothes_labels is not None:
            item["clothes"] = self.clothes_labels[index]
        return item

    def _skipped(self, error):
        self.bad_images[error.path] = str(error)
        names = sorted(self.bad_images)
        shown = ", ".join(names[:10]) + (
            f", ... ({len(names) - 10} more)" if len(names) > 10 else ""
        )
        logger.warning(
            "DATALOADER.SKIP_BAD_IMAGES: skipped an unreadable training image (%s); "
            "%d skipped so far by this loader process (pid %d): %s",
            error,
            len(names),
            os.getpid(),
            shown,
        )

    def _candidates(self, index):
        """Other indices to try: same identity first (shuffled), then random ones; at most
        MAX_SUBSTITUTES of the random ones."""
        if self._by_pid is None:
            self._by_pid = {}
            for i, item in enumerate(self.img_items):
                self._by_pid.setdefault(item[1], []).append(i)
        same = [i for i in self._by_pid[self.img_items[index][1]] if i != index]
        random.shuffle(same)
        yield from same
        for _ in range(MAX_SUBSTITUTES):
            yield random.randrange(len(self.img_items))

    def _substitute(self, index):
        for other in self._candidates(index):
            if self.img_items[other][0] in self.bad_images:
                continue
            try:
                return self._item(other)
            except BadImageError as e:
                self._skipped(e)
        path = self.img_items[index][0]
        raise BadImageError(
            f"cannot decode {path}: no readable substitute found (same identity, then "
            f"{MAX_SUBSTITUTES} random tries; {len(self.bad_images)} unreadable images so far)",
            path,
        )


# Test sets -------------------------------------------------------------------------------

_CHECKED = {}  # (paths) -> {path: reason} of the unreadable ones, per process


def _problem(path):
    try:
        load_image(path)
    except BadImageError as e:
        return str(e)
    return None


def drop_unreadable(name, query, gallery, num_threads=1):
    """For evaluation with SKIP_BAD_IMAGES: decodes every query and gallery image once per
    process (threads: PIL decodes outside the GIL) and returns (query, gallery) without the
    unreadable ones, logging a warning that names them."""
    paths = tuple(item[0] for item in query) + tuple(item[0] for item in gallery)
    bad = _CHECKED.get(paths)
    if bad is None:
        with ThreadPoolExecutor(max(1, int(num_threads))) as pool:
            problems = pool.map(_problem, paths, chunksize=64)
            bad = {p: r for p, r in zip(paths, problems) if r is not None}
        _CHECKED[paths] = bad
        if bad:
            logger.warning(
                "DATALOADER.SKIP_BAD_IMAGES: %s: %d unreadable image(s) left out of the "
                "evaluation (the figures are over the remaining query / gallery images): %s",
                name,
                len(bad),
                "; ".join(bad[p] for p in sorted(bad)),
            )
    if not bad:
        return query, gallery
    return ([q for q in query if q[0] not in bad], [g for g in gallery if g[0] not in bad])
