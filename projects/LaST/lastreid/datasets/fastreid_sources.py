"""The other pre-training sources of the transfer table: fastreid's own registered
`Market1501`, `DukeMTMC` and `MSMT17` datasets, used as they are (not forked).

fastreid lists their images with an unsorted `glob` (item order, and so sampling, depends on
the file system), parses the names with asserts, and stops on a missing folder with a bare
`assert` or a `RuntimeError`. `check_layout` walks a tree the way those classes will read
it and raises a one-line `DatasetLayoutError` for the first problem; `sort_items` makes the
lists deterministic after construction. `lastreid.datasets.build_dataset` calls both.

Layouts (under the datasets root)::

    Market-1501-v15.09.15/{bounding_box_train,query,bounding_box_test}/NNNN_cCsS_FFFFFF_BB.jpg
        pid -1 = junk (skipped by fastreid), pid 0 = distractor (kept); cameras c1..c6
    DukeMTMC-reID/{bounding_box_train,query,bounding_box_test}/NNNN_cC_fFFFFFFF.jpg  (c1..c8)
    MSMT17_V1/{train,test}/<pid>/<file>.jpg with list_{train,val,query,gallery}.txt
        (or MSMT17_V2/{mask_train_v2,mask_test_v2}); lines "<pid>/<file>.jpg <label>",
        camera = third '_' field of the name (1..15)

Documented statistics (as fastreid reads them): Market1501 train 751 ids / 12,936, query
750 / 3,368, gallery 751 (incl. distractor 0) / 15,913; DukeMTMC train 702 / 16,522, query
702 / 2,228, gallery 1,110 / 17,661; MSMT17 list_train 1,041 / 30,248 (+ list_val 2,373),
query 3,060 / 11,659, gallery 3,060 / 82,161.
"""

import os
import re

from .common import DatasetLayoutError

__all__ = [
    "SOURCE_DATASETS",
    "LAYOUTS",
    "DOCUMENTED",
    "check_layout",
    "split_entries",
    "sort_items",
]

SOURCE_DATASETS = ("Market1501", "DukeMTMC", "MSMT17")

LAYOUTS = {
    "Market1501": "<root>/Market-1501-v15.09.15/{bounding_box_train,query,bounding_box_test}/"
    "NNNN_cCsS_FFFFFF_BB.jpg (camera c1..c6, pid -1 junk, 0 distractor)",
    "DukeMTMC": "<root>/DukeMTMC-reID/{bounding_box_train,query,bounding_box_test}/"
    "NNNN_cC_fFFFFFFF.jpg (camera c1..c8)",
    "MSMT17": "<root>/MSMT17_V1/{train,test}/ (or MSMT17_V2/{mask_train_v2,mask_test_v2}/) "
    "with list_{train,val,query,gallery}.txt lines '<pid>/<file>.jpg <label>'",
}

DOCUMENTED = {
    "Market1501": {
        "train": dict(ids=751, images=12936),
        "query": dict(ids=750, images=3368),
        "gallery": dict(ids=751, images=15913),
    },
    "DukeMTMC": {
        "train": dict(ids=702, images=16522),
        "query": dict(ids=702, images=2228),
        "gallery": dict(ids=1110, images=17661),
    },
    "MSMT17": {
        "train": dict(ids=1041, images=30248),  # list_val: 2,373 images of train ids
        "query": dict(ids=3060, images=11659),
        "gallery": dict(ids=3060, images=82161),
    },
}

# fastreid's own name pattern (searched in the whole path) and camera ranges.
_CAMERA_PATTERN = re.compile(r"([-\d]+)_c(\d)")
_CAMERAS = {"Market1501": 6, "DukeMTMC": 8, "MSMT17": 15}
_FOLDERS = {"Market1501": "Market-1501-v15.09.15", "DukeMTMC": "DukeMTMC-reID"}
_SPLIT_DIRS = {"train": "bounding_box_train", "query": "query", "gallery": "bounding_box_test"}
_MSMT_VERSIONS = (("MSMT17_V1", "train", "test"), ("MSMT17_V2", "mask_train_v2", "mask_test_v2"))
_MSMT_LISTS = (
    ("train", "list_train.txt", 0),
    ("val", "list_val.txt", 0),
    ("query", "list_query.txt", 1),
    ("gallery", "list_gallery.txt", 1),
)
JUNK = -1  # a Market-1501 pid that fastreid skips


def _require_dir(path, name):
    if not os.path.isdir(path):
        raise DatasetLayoutError("folder not found", path, LAYOUTS[name])
    return path


def _camera_pid(path, name, folder):
    """(pid, camera) of a Market-1501 / DukeMTMC file the way fastreid parses it, or a
    DatasetLayoutError when fastreid's assert would fail or would read the wrong field."""
    if _CAMERA_PATTERN.search(folder):  # fastreid searches the whole path, folders first
        raise DatasetLayoutError(
            "the folder path contains '<digits>_c<digit>', which fastreid would read as the "
            "person id and camera of every image",
            folder,
            "a datasets root without such a name",
        )
    found = _CAMERA_PATTERN.match(os.path.basename(path))
    if not found:
        raise DatasetLayoutError("cannot parse the {} image name".format(name), path, LAYOUTS[name])
    text, camera = found.group(1), int(found.group(2))
    if not re.fullmatch(r"-1|\d+", text) or (text == "-1" and name != "Market1501"):
        raise DatasetLayoutError(
            "cannot parse the person id {!r} of".format(text), path, LAYOUTS[name]
        )
    pid = int(text)
    if not 1 <= camera <= _CAMERAS[name] or (name == "Market1501" and pid > 1501):
        raise DatasetLayoutError("person id or camera out of range in", path, LAYOUTS[name])
    return pid, camera - 1


def _folder_entries(name, root):
    base = _require_dir(os.path.join(root, _FOLDERS[name]), name)
    splits = {}
    for split, sub in _SPLIT_DIRS.items():
        folder = _require_dir(os.path.join(base, sub), name)
        entries = []
        names = sorted(n for n in os.listdir(folder) if n.endswith(".jpg"))  # fastreid: *.jpg
        for path in (os.path.join(folder, n) for n in names):
            try:
                entries.append((path, _camera_pid(path, name, folder)[0], None))
            except DatasetLayoutError as e:
                entries.append((path, None, e))
        splits[split] = (folder, entries)
    return splits


def msmt17_folder(root):
    """(version folder, train folder, test folder) of the MSMT17 tree fastreid will read."""
    for version, train, test in _MSMT_VERSIONS:
        if os.path.exists(os.path.join(root, version)):
            return (
                os.path.join(root, version),
                os.path.join(root, version, train),
                os.path.join(root, version, test),
            )
    raise DatasetLayoutError("folder not found", os.path.join(root, "MSMT17_V1"), LAYOUTS["MSMT17"])


def _msmt_entries(root):
    base, train_dir, test_dir = msmt17_folder(root)
    _require_dir(train_dir, "MSMT17")
    _require_dir(test_dir, "MSMT17")
    splits = {}
    for split, list_name, is_test in _MSMT_LISTS:
        list_path = os.path.join(base, list_name)
        if not os.path.isfile(list_path):
            raise DatasetLayoutError("list file not found", list_path, LAYOUTS["MSMT17"])
        folder = test_dir if is_test else train_dir
        entries = []
        with open(list_path) as f:
            for number, line in enumerate(f, 1):
                where = "{}:{}".format(list_path, number)
                fields = line.rstrip("\n").split(" ")
                if len(fields) != 2 or not fields[1].isdigit():  # fastreid: line.split(' ')
                    entries.append(
                        (
                            where,
                            None,
                            DatasetLayoutError(
                                "cannot parse the list line {!r} at".format(line.rstrip("\n")),
                                where,
                                "'<pid>/<file>.jpg <label>' with one space",
                            ),
                        )
                    )
                    continue
                rel, label = fields[0], int(fields[1])
                path = os.path.join(folder, rel)
                problem = None
                camera = rel.split("_")[2] if len(rel.split("_")) > 2 else ""
                if not camera.isdigit() or not 1 <= int(camera) <= _CAMERAS["MSMT17"]:
                    problem = DatasetLayoutError(
                        "cannot parse the camera (third '_' field) of", path, LAYOUTS["MSMT17"]
                    )
                elif not os.path.isfile(path):
                    problem = DatasetLayoutError(
                        "listed in {} but missing".format(list_name), path, LAYOUTS["MSMT17"]
                    )
                entries.append((path, None if problem else label, problem))
        splits[split] = (list_path, entries)
    return splits


def split_entries(name, root):
    """{split: (folder or list file, [(path, pid or None, DatasetLayoutError or None)])} of a
    source dataset, walked as fastreid reads it (junk images have pid -1). Raises
    DatasetLayoutError when a folder or list file is missing."""
    if name == "MSMT17":
        return _msmt_entries(root)
    return _folder_entries(name, root)


def check_layout(name, root):
    """Raises a one-line DatasetLayoutError for the first problem fastreid would trip over
    in the tree of `name` (one of SOURCE_DATASETS) under `root`."""
    for split, (where, entries) in split_entries(name, root).items():
        for _, _, problem in entries:
            if problem is not None:
                raise problem
        if split != "val" and not any(pid not in (None, JUNK) for _, pid, _ in entries):
            raise DatasetLayoutError("no images found", where, LAYOUTS[name])


def sort_items(dataset):
    """Sorts, in place, the train / query / gallery lists of a constructed fastreid dataset
    by image path (fastreid's glob order is the file system's)."""
    for items in (dataset.train, dataset.query, dataset.gallery):
        items.sort(key=lambda item: item[0])
    return dataset
