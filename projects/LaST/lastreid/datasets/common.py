"""Helpers shared by the dataset modules: folder checks, image listing, name parsing
errors and the "every test image its own camera" camid assignment."""

import os

from ..errors import LastreidError, one_line

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


class DatasetLayoutError(LastreidError, ValueError):
    """A dataset folder does not have the expected layout.

    The message is a single line naming the offending path and the layout that was
    expected, so that it reads well at the end of a training log.
    """

    def __init__(self, problem, path, expected):
        self.path = path
        self.expected = expected
        message = f"{problem}: {path} (expected {expected})"
        super().__init__(one_line(message))


def is_image_file(name):
    # Dot-files (e.g. macOS "._x.jpg" resource forks) are never dataset images.
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def require_dir(path, expected):
    if not os.path.isdir(path):
        raise DatasetLayoutError("folder not found", path, expected)
    return path


def list_images(directory, expected, recursive=False):
    """Sorted image paths in `directory` (and below it if `recursive`).

    Non-image files are skipped; a missing folder or one without any image is a
    `DatasetLayoutError`. Sorting makes item order, and so the test camids, deterministic.
    """
    require_dir(directory, expected)
    if recursive:
        paths = [
            os.path.join(folder, name)
            for folder, _, names in os.walk(directory)
            for name in names
            if is_image_file(name)
        ]
    else:
        paths = [
            entry.path
            for entry in os.scandir(directory)
            if entry.is_file() and is_image_file(entry.name)
        ]
    if not paths:
        raise DatasetLayoutError("no images found", directory, expected)
    return sorted(paths)


def parse_int(text, path, expected, what="person id"):
    """`int(text)` for a field of a file or folder name; anything but digits is an error."""
    if not (text.isascii() and text.isdigit()):
        raise DatasetLayoutError(f"cannot parse the {what} {text!r} of", path, expected)
    return int(text)


def own_camid_per_image(query, gallery):
    """Turns (path, pid) pairs into (path, pid, camid) items with one camid per image:
    query i gets camid i and gallery j gets n_query + j.

    fastreid's evaluator drops gallery images that share pid AND camid with the query;
    for datasets without camera labels, unique camids keep every true match.
    """
    n_query = len(query)
    query_items = [(path, pid, i) for i, (path, pid) in enumerate(query)]
    gallery_items = [(path, pid, n_query + j) for j, (path, pid) in enumerate(gallery)]
    return query_items, gallery_items
