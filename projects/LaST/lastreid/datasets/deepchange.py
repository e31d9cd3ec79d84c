"""DeepChange: long-term person re-identification over twelve months, seventeen cameras.

Reference:
    Xu and Zhu. DeepChange: A Long-Term Person Re-Identification Benchmark with Clothes
    Change. arXiv:2105.14685, 2021. URL: https://github.com/PengBoXiangShang/deepchange

Layout (under ``<root>/DeepChangeDataset/``)::

    train-set/  val-set-query/  val-set-gallery/  test-set-query/  test-set-gallery/
    train-set-bbox.txt  val-set-query-bbox.txt  ...  test-set-gallery-bbox.txt

Each ``<split>-bbox.txt`` lists the split's images, one ``<image name>,<tracklet id>`` a
line (the name relative to the ``<split>/`` folder); only listed images are read, in list
order. Image names split on ``_`` start ``P<pid>_C<camera>_<clothes token>_...``, e.g.
``P0012_C05_D017_...jpg``; the clothes key is ``<field 0>_<field 2>`` (``P0012_D017``).
As its authors evaluate, the tracklet id takes the camid's place in query and gallery,
so a true match from the query's camera but another tracklet counts; training items keep
the camera (``DeepChange_<camera>``).

Documented statistics: 1,121 ids, 17 cameras, 178,407 boxes (the authors' README). The
split sizes below are the paper's split table as recalled here, not re-checked against
the paper; they add up exactly to those totals, and each folder's ids are its split's:
    - train: 450 ids / 75,083 images
    - val: 150 ids; query 4,976, gallery 17,865 images
    - test: 521 ids; query 17,527, gallery 62,956 images

Registered datasets:
    - ``DeepChange``: train on ``train-set``; query / gallery ``test-set-query`` /
      ``test-set-gallery``.
    - ``DeepChangeVal``: no train split; ``val-set-query`` / ``val-set-gallery``
      (checkpoint selection on val, as ``LaSTVal``).

Clothes keys are kept in ``train_clothes``, ``query_clothes`` and ``gallery_clothes``,
lists parallel to the splits.
"""

import os

from fastreid.data.datasets import DATASET_REGISTRY
from fastreid.data.datasets.bases import ImageDataset

from .common import DatasetLayoutError, is_image_file, parse_int, require_dir

__all__ = ["DeepChange", "DeepChangeVal", "parse_deepchange_name", "bbox_list_entries"]

CAMERAS = 17
LAYOUT = (
    "<root>/DeepChangeDataset/ with {train-set,val-set-query,val-set-gallery,"
    "test-set-query,test-set-gallery}/ and a <split>-bbox.txt list beside each"
)
NAME_FORMAT = "P<pid>_C<camera 1..17>_<clothes token>[_...].jpg, e.g. P0012_C05_D017_T09_01.jpg"
LIST_FORMAT = "one '<image name>,<integer tracklet id>' a line"


def parse_deepchange_name(path):
    """Returns (pid, camera 1..17, clothes key) of a DeepChange image, e.g.
    (12, 5, "P0012_D017") for P0012_C05_D017_T09_01.jpg."""
    fields = os.path.splitext(os.path.basename(path))[0].split("_")
    if len(fields) < 3 or fields[0][:1] != "P" or fields[1][:1] != "C" or not fields[2]:
        raise DatasetLayoutError("cannot parse the DeepChange image name", path, NAME_FORMAT)
    pid = parse_int(fields[0][1:], path, NAME_FORMAT)
    camera = parse_int(fields[1][1:], path, NAME_FORMAT, "camera")
    if not 1 <= camera <= CAMERAS:
        raise DatasetLayoutError("camera out of range 1..17 in", path, NAME_FORMAT)
    return pid, camera, f"{fields[0]}_{fields[2]}"


def list_path(base, split):
    """The image list of split folder `split` under the dataset folder `base`."""
    return os.path.join(base, f"{split}-bbox.txt")


def bbox_list_entries(base, split):
    """[(path or "<list>:<line>", tracklet id or None, DatasetLayoutError or None)] of every
    non-blank line of `split`'s list: a line that does not parse, a name that does not
    parse and a listed image that is missing each carry their error. Raises
    DatasetLayoutError when the folder or the list is missing."""
    folder = require_dir(os.path.join(base, split), LAYOUT)
    listed = list_path(base, split)
    if not os.path.isfile(listed):
        raise DatasetLayoutError("image list not found", listed, LAYOUT)
    present = set(os.listdir(folder))  # one listing, not one stat per line
    entries = []
    with open(listed) as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            where = f"{listed}:{number}"
            name, sep, tracklet = line.rpartition(",")
            if not sep or not tracklet.strip().isdigit() or not is_image_file(name):
                problem = DatasetLayoutError(
                    f"cannot parse the line {line!r} at", where, LIST_FORMAT
                )
                entries.append((where, None, problem))
                continue
            path = os.path.join(folder, name)
            try:
                parse_deepchange_name(path)
            except DatasetLayoutError as e:
                entries.append((path, None, e))
                continue
            if name not in present:
                problem = DatasetLayoutError(f"listed in {listed} but missing", path, LAYOUT)
                entries.append((path, None, problem))
                continue
            entries.append((path, int(tracklet), None))
    return entries


def _read_list(base, split):
    """[(path, tracklet id)] of a split's list; the first problem is raised."""
    items = []
    for path, tracklet, problem in bbox_list_entries(base, split):
        if problem is not None:
            raise problem
        items.append((path, tracklet))
    if not items:
        raise DatasetLayoutError("no images listed in", list_path(base, split), LIST_FORMAT)
    return items


class _DeepChangeBase(ImageDataset):
    dataset_dir = "DeepChangeDataset"
    dataset_name = "DeepChange"
    has_train = True
    eval_split = "test"
    HAS_CLOTHES = True
    LAYOUT = LAYOUT

    SYNTHETIC_KEY = "deepchange"  # lastreid.datasets.synthetic's name for this tree

    @classmethod
    def split_reader(cls, split):
        """(recursive, path -> person id) of a split folder of DOCUMENTED, for the checker
        (which takes the split's images from `split_listing`)."""
        return False, lambda path: parse_deepchange_name(path)[0]

    @classmethod
    def clothes_reader(cls, split):
        """path -> clothes key of an image of `split`, for the checker's clothes count."""
        return lambda path: parse_deepchange_name(path)[2]

    @classmethod
    def split_listing(cls, base, split):
        """(listed paths that parse and exist, [(path or list line, reason)]) of a split,
        for the checker: DeepChange reads its lists, not its folders."""
        entries = bbox_list_entries(base, split)
        paths = [path for path, _, problem in entries if problem is None]
        return paths, [(where, str(problem)) for where, _, problem in entries if problem]

    @classmethod
    def required_folders(cls):
        """The folders (relative to the datasets root) this dataset reads."""
        return [f"DeepChangeDataset/{split}" for split in cls.DOCUMENTED]

    def __init__(self, root="datasets", **kwargs):
        self.root = root
        self.dataset_dir = require_dir(os.path.join(root, "DeepChangeDataset"), LAYOUT)

        train, self.train_clothes = [], []
        if self.has_train:
            for path, _ in _read_list(self.dataset_dir, "train-set"):
                pid, camera, clothes = parse_deepchange_name(path)
                name = self.dataset_name
                train.append((path, f"{name}_{pid}", f"{name}_{camera}"))
                self.train_clothes.append(clothes)
        query, self.query_clothes = self._test_items(f"{self.eval_split}-set-query")
        gallery, self.gallery_clothes = self._test_items(f"{self.eval_split}-set-gallery")

        super().__init__(train, query, gallery, **kwargs)
        if self.combineall:  # keep train_clothes parallel to the combined train list
            self.train_clothes = self.train_clothes + self.query_clothes + self.gallery_clothes

    def _test_items(self, split):
        """(items with the tracklet id as camid, clothes keys) of a query / gallery list."""
        items, clothes = [], []
        for path, tracklet in _read_list(self.dataset_dir, split):
            pid, _, key = parse_deepchange_name(path)
            items.append((path, pid, tracklet))
            clothes.append(key)
        return items, clothes


@DATASET_REGISTRY.register()
class DeepChange(_DeepChangeBase):
    """DeepChange: train on train-set, evaluate on test-set (module docstring)."""

    dataset_name = "DeepChange"
    # The documented statistics (module docstring) per folder, as data.
    DOCUMENTED = {
        "train-set": dict(ids=450, images=75083),
        "test-set-query": dict(ids=521, images=17527),
        "test-set-gallery": dict(ids=521, images=62956),
    }


@DATASET_REGISTRY.register()
class DeepChangeVal(_DeepChangeBase):
    """DeepChange validation split (no train items): val-set-query / val-set-gallery."""

    dataset_name = "DeepChangeVal"
    has_train = False
    eval_split = "val"
    DOCUMENTED = {
        "val-set-query": dict(ids=150, images=4976),
        "val-set-gallery": dict(ids=150, images=17865),
    }
