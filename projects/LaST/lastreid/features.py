"""Feature extraction: a config + weights -> float32 re-id features of image files.

    from lastreid.startup import build_cfg
    from lastreid.features import FeatureExtractor

    cfg = build_cfg("configs/LaST/bagtricks_R50.yml", ["MODEL.WEIGHTS", "model_best.pth"],
                    eval_only=True)
    extractor = FeatureExtractor(cfg)                 # weights: MODEL.WEIGHTS, or pass weights=...
    feats = extractor.extract(["a.jpg", "b.jpg"])     # (2, dim) float32 numpy array
    data = extractor.extract_dataset("LaSTVal")       # features, paths, pids, camids, num_query
    save_features("val.npz", data)                    # what tools/extract_features.py writes

The features are exactly those the evaluation ranks: the model in eval mode (for BoT the
BNNeck feature; for the part models their concatenated parts, `lastreid.modeling`), on the
test transforms of the config (fast-reid's resize to INPUT.SIZE_TEST, INPUT.INTERPOLATION),
under the config's evaluation precision path (`lastreid.precision.for_inference`: float32
unless MODEL.CPU_BF16 is on, then a BN-folded bf16 copy under autocast) and, when
TEST.FLIP.ENABLED, averaged with the features of the mirrored images.

In a distributed job (a tool under torchrun, `lastreid.launch.init_from_env`) every process
extracts a contiguous share of the images and the main process gets all the features, in
order; `extract`, `extract_dataset` and `extract_files` return None in the other processes.
"""

import argparse
import glob
import logging
import os

import numpy as np
import torch
from fastreid.data.data_utils import read_image
from fastreid.utils import comm
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from . import precision
from .atomic import write_atomic
from .datasets import build_dataset
from .datasets.celebreid import parse_celebreid_name
from .datasets.common import DatasetLayoutError, is_image_file
from .datasets.last import parse_last_name
from .datasets.prcc import CAMERAS, parse_prcc_train_path
from .errors import MissingFileError
from .gather import gather_rows, process_share
from .modeling import build_model, feature_dim, load_weights
from .startup import build_cfg
from .transforms import build_transforms

logger = logging.getLogger(__name__)

__all__ = [
    "FeatureExtractor",
    "build_inference_cfg",
    "inference_argument_parser",
    "list_image_files",
    "process_share",
    "parse_crop_name",
    "save_features",
    "load_features",
]


def build_inference_cfg(config_file, weights=None, opts=()):
    """The checked config for extracting features with `weights` (else MODEL.WEIGHTS from
    the file / opts). With no weights at all the model keeps its initial weights: the
    ImageNet file is then not needed either (MODEL.BACKBONE.PRETRAIN False)."""
    opts = list(opts or [])
    if weights:
        return build_cfg(config_file, opts + ["MODEL.WEIGHTS", str(weights)], eval_only=True)
    probe = build_cfg(config_file, opts + ["MODEL.BACKBONE.PRETRAIN", "False"])
    if probe.MODEL.WEIGHTS:
        return build_cfg(config_file, opts, eval_only=True)
    return probe


def inference_argument_parser(doc):
    """The command-line parser of a tool that runs a model given by a config and a checkpoint
    (tools/extract_features.py, tools/export_onnx.py): description and epilog from the
    tool's docstring, --config-file and --weights (for `build_inference_cfg`). The tool adds
    its own flags and, last, the trailing `opts` overrides."""
    parser = argparse.ArgumentParser(
        description=doc.split("\n\n")[0],
        epilog=doc.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument(
        "--weights",
        default=None,
        help="checkpoint (default MODEL.WEIGHTS; with neither: initial weights)",
    )
    return parser


class _ImageFiles(Dataset):
    """Image files through the test transforms; yields (image tensor, index)."""

    def __init__(self, paths, transform, start=0):
        self.paths, self.transform, self.start = list(paths), transform, start

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        # "RGB": a no-op for the datasets' RGB JPEGs, and safe for grey / RGBA crops.
        return self.transform(read_image(self.paths[index], "RGB")), self.start + index


def _progress(iterable, total, desc, enabled):
    if not enabled:
        return iterable
    return tqdm(iterable, total=total, desc=desc, unit="batch", dynamic_ncols=True)


class FeatureExtractor:
    """Builds the model of `cfg`, loads `weights` (default MODEL.WEIGHTS; with neither,
    the model keeps its initial weights, with a warning) and extracts features.

    cfg: a config from `lastreid.config.build_cfg` (MODEL.DEVICE, INPUT.SIZE_TEST,
    TEST.IMS_PER_BATCH, TEST.FLIP.ENABLED, DATALOADER.NUM_WORKERS are used).
    model: use this model (e.g. one being trained) instead of building one; it is put in
    eval mode for each extraction and restored afterwards.
    batch_size / flip / num_workers: override the config's values.
    """

    def __init__(
        self,
        cfg,
        weights=None,
        model=None,
        batch_size=None,
        flip=None,
        num_workers=None,
        progress=True,
    ):
        self.cfg = cfg
        self.device = torch.device(cfg.MODEL.DEVICE)
        self.batch_size = int(batch_size or cfg.TEST.IMS_PER_BATCH)
        self.flip = bool(cfg.TEST.FLIP.ENABLED if flip is None else flip)
        self.num_workers = int(cfg.DATALOADER.NUM_WORKERS if num_workers is None else num_workers)
        self.progress = progress and comm.is_main_process()
        self.transform = build_transforms(cfg, is_train=False)
        # build_model logs the path it prepares; a model passed in gets it logged here.
        self.fast_path = precision.resolve(cfg, log=model is not None)
        self.weights = weights if weights is not None else (cfg.MODEL.WEIGHTS or None)
        if model is None:
            model = self._build_model()
        self.model = precision.prepare_model(model, self.fast_path)

    def _build_model(self):
        model = build_model(self.cfg)
        if self.weights:
            load_weights(self.cfg, model, self.weights)
        else:
            logger.warning(
                "No weights given (MODEL.WEIGHTS is empty): features of the model's initial weights"
            )
        return model

    @property
    def dim(self):
        """The test feature's dimension (`modeling.feature_dim`: asked of the model)."""
        return feature_dim(self.cfg, self.model)

    def forward(self, images):
        """Float32 CPU features of a batch of transformed images ((B, 3, H, W), 0..255),
        flip-averaged when self.flip. `images` is not modified. Each call prepares the
        inference model afresh (on the bf16 path a BN-folded copy): use `extract()` for
        many batches."""
        return self._forward(images, precision.for_inference(self.model, self.fast_path))

    @torch.no_grad()
    def _forward(self, images, model):
        images = images.to(self.device)
        if self.fast_path.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        batches = [images] + ([images.flip(dims=[3])] if self.flip else [])
        outputs = [model(b).float() for b in batches]
        feats = outputs[0] if len(outputs) == 1 else (outputs[0] + outputs[1]) / 2
        return feats.cpu()

    def extract(self, paths, desc="features"):
        """(len(paths), dim) float32 array of the features of the image files `paths`
        (None outside the main process of a distributed job)."""
        paths = list(paths)
        share = process_share(len(paths))
        images = _ImageFiles(paths[share.start : share.stop], self.transform, start=share.start)
        loader = DataLoader(
            images, batch_size=self.batch_size, shuffle=False, num_workers=self.num_workers
        )
        # The main process's array takes every process's share (its own first); the others
        # hold their own. Allocated from the first batch, when the dimension is known.
        rows = len(paths) if comm.is_main_process() else len(share)
        out = np.empty((rows, self.dim), dtype=np.float32) if not len(share) else None
        was_training = self.model.training
        self.model.eval()
        # One inference model per extraction: a model passed in may train between them.
        model = precision.for_inference(self.model, self.fast_path)
        try:
            for images, index in _progress(loader, len(loader), desc, self.progress):
                feats = self._forward(images, model).numpy()
                if out is None:
                    out = np.empty((rows, feats.shape[1]), dtype=np.float32)
                out[index.numpy() - share.start] = feats
        finally:
            self.model.train(was_training)
        # Rank order: the shares in order, gathered into `out` a chunk at a time.
        return gather_rows(out[: len(share)], out=out if comm.is_main_process() else None)

    def extract_dataset(self, name, root=None):
        """Features of the query + gallery of the registered dataset `name` (queries first),
        as a dict: features, paths, pids, camids (numpy arrays), num_query, dataset."""
        data = build_dataset(name, root=root)
        items = list(data.query) + list(data.gallery)
        feats = self.extract([path for path, _, _ in items], desc=f"{name} features")
        if feats is None:
            return None
        return dict(
            features=feats,
            paths=np.array([path for path, _, _ in items]),
            pids=np.array([pid for _, pid, _ in items], dtype=np.int64),
            camids=np.array([camid for _, _, camid in items], dtype=np.int64),
            num_query=len(data.query),
            dataset=name,
        )

    def extract_files(self, pattern):
        """Features of a folder of crops (searched recursively) or of a glob pattern, with
        pids / camids parsed from the names where possible (else -1), as a dict like
        `extract_dataset`'s (num_query 0: a folder has no query / gallery split)."""
        paths = list_image_files(pattern)
        parsed = [parse_crop_name(p) for p in paths]
        feats = self.extract(paths)
        if feats is None:
            return None
        return dict(
            features=feats,
            paths=np.array(paths),
            pids=np.array([pid for pid, _ in parsed], dtype=np.int64),
            camids=np.array([camid for _, camid in parsed], dtype=np.int64),
            num_query=0,
            dataset="",
        )


def list_image_files(pattern):
    """Sorted image files of a folder (recursively) or matching a glob pattern."""
    if os.path.isdir(pattern):
        paths = [
            os.path.join(folder, name)
            for folder, _, names in os.walk(pattern)
            for name in names
            if is_image_file(name)
        ]
    else:
        paths = [
            p
            for p in glob.glob(pattern, recursive=True)
            if os.path.isfile(p) and is_image_file(os.path.basename(p))
        ]
    if not paths:
        raise MissingFileError(f"no image files in {pattern!r} (.jpg, .jpeg or .png)")
    return sorted(paths)


def parse_crop_name(path):
    """(pid, camid) of a crop from its name, trying the dataset name formats in turn:
    LaST (6 fields, no camera: camid -1), PRCC (<pid>/<A|B|C>_cropped_rgb*.jpg: camid
    0/1/2), Celeb-reID (<pid>_<n>_<x>.jpg, no camera). (-1, -1) when none parses."""

    def last(p):
        return parse_last_name(p)[0], -1

    def prcc(p):
        pid, camera = parse_prcc_train_path(p)
        return pid, CAMERAS[camera]

    def celebreid(p):
        return parse_celebreid_name(p), -1

    for parse in (last, prcc, celebreid):
        try:
            return parse(path)
        except DatasetLayoutError:
            pass
    return -1, -1


def save_features(path, data, **extra):
    """Writes a features dict (`extract_dataset` / `extract_files`) and `extra` metadata
    (strings / numbers) to one uncompressed .npz, atomically; creates the folder. A path
    without the .npz suffix gets it, as NumPy gives it. Returns the path written."""
    path = os.fspath(path)
    path = path if path.endswith(".npz") else path + ".npz"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    arrays = {k: np.asarray(v) for k, v in {**data, **extra}.items() if v is not None}
    write_atomic(path, lambda f: np.savez(f, **arrays))
    return path


def load_features(path):
    """The dict `save_features` wrote (num_query as an int, strings as str)."""
    if not os.path.isfile(path):
        raise MissingFileError(f"features file {path} does not exist")
    with np.load(path, allow_pickle=False) as npz:
        data = {k: npz[k] for k in npz.files}
    for key, value in data.items():
        if value.ndim == 0:
            data[key] = value.item()
    data["num_query"] = int(data.get("num_query", 0))
    return data
