"""A run's saved numbers, `OUTPUT_DIR/results.json`, and the recipe hash that says which
config made them (docs/training.md: What a run writes). Every table (transfer, benchmark)
and plot reads a run's numbers from here, never from its log.

    {"config_sha256": "<merged config>",
     "iterations_per_epoch": 22,
     "evaluation": {"epoch": 20, "datasets": {"LaSTVal": {"Rank-1": ..., "mAP": ...}}},
     "final_test": {"checkpoint": "model_best.pth", "epoch": 15,
                    "datasets": {"LaST": {"Rank-1": ..., "mAP": ...}}}}

`evaluation` is the run's last evaluation on DATASETS.TESTS (the final weights; with
--eval-only, `{"weights": <file>, "datasets": ...}`), `final_test` the test of the kept
checkpoint on TEST.FINAL_TESTS. Epochs count from 1.
"""

import hashlib
import json
import os
import re

import yaml

from .atomic import write_text_atomic

__all__ = [
    "RESULTS_FILE",
    "by_dataset",
    "config_sha256",
    "config_yaml_text",
    "dataset_metrics",
    "evaluation_part",
    "read_json",
    "read_run_results",
    "run_config",
    "run_config_sha256",
    "write_run_results",
]

RESULTS_FILE = "results.json"
# Where a run is written, not what it computes: two runs of one recipe share the hash.
_NOT_RECIPE = ("OUTPUT_DIR",)
RECIPE_LINE = "# lastreid recipe sha256: {}"
_RECIPE_COMMENT = re.compile(r"# lastreid recipe sha256: ([0-9a-f]{64})\n")


def _sha256_of_tree(tree):
    tree = {k: v for k, v in tree.items() if k not in _NOT_RECIPE}
    text = json.dumps(tree, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def config_sha256(cfg):
    """The hash of a merged config (a CfgNode): equal for equal recipes wherever they run."""
    return _sha256_of_tree(yaml.safe_load(cfg.dump()))


def config_yaml_text(cfg, recipe_sha256=None):
    """A run's config.yaml: the dump of `cfg` under a comment naming the hash of the recipe
    it was made from (`recipe_sha256`, default `cfg`'s own). fastreid fills values in later
    (MODEL.HEADS.NUM_CLASSES 0 becomes the dataset's count) and dumps again: the comment
    still names the recipe as given."""
    return RECIPE_LINE.format(recipe_sha256 or config_sha256(cfg)) + "\n" + cfg.dump()


def run_config(run_dir):
    """The merged config (a dict) a run wrote to its config.yaml; None without one."""
    try:
        with open(os.path.join(run_dir, "config.yaml")) as f:
            config = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return None
    return config if isinstance(config, dict) else None


def run_config_sha256(run_dir):
    """The recipe hash of the config a run started with (the comment atop its config.yaml,
    else the hash of its content), None without one."""
    try:
        with open(os.path.join(run_dir, "config.yaml")) as f:
            text = f.read()
    except OSError:
        return None
    found = _RECIPE_COMMENT.match(text)
    if found:
        return found.group(1)
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    return _sha256_of_tree(tree) if isinstance(tree, dict) else None


def by_dataset(results, names):
    """fastreid's test results (flat for one dataset, keyed by dataset for several) as
    {dataset: {metric: float}}, numbers only."""
    names = list(names)
    if len(names) == 1 and not isinstance((results or {}).get(names[0]), dict):
        results = {names[0]: results or {}}
    return {
        name: {
            k: float(v)
            for k, v in (results.get(name) or {}).items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        for name in names
    }


def evaluation_part(cfg, results, **where):
    """The `evaluation` part of results.json: fastreid's `results` on DATASETS.TESTS and
    where they come from (`epoch=` of training, `weights=` of --eval-only)."""
    return dict(where, datasets=by_dataset(results, cfg.DATASETS.TESTS))


def write_run_results(cfg, evaluation, final_test=None, iterations_per_epoch=None):
    """Writes OUTPUT_DIR/results.json atomically (see the module docstring)."""
    record = {"config_sha256": config_sha256(cfg)}
    if iterations_per_epoch:
        record["iterations_per_epoch"] = int(iterations_per_epoch)
    record["evaluation"] = evaluation
    if final_test is not None:
        record["final_test"] = final_test
    path = os.path.join(cfg.OUTPUT_DIR, RESULTS_FILE)
    write_text_atomic(json.dumps(record, indent=2) + "\n", path)
    return path


def read_json(path):
    """The dict in a JSON file; {} when it is missing, unreadable or not a dict."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_run_results(run_dir):
    """The dict of a run's results.json; {} when it is missing, unreadable or not ours."""
    data = read_json(os.path.join(run_dir, RESULTS_FILE))
    return data if "evaluation" in data else {}


def dataset_metrics(results, dataset, part="evaluation"):
    """The metrics of `dataset` in `part` ("evaluation" or "final_test") of a read
    results.json, or None unless Rank-1 and mAP are there."""
    metrics = ((results or {}).get(part) or {}).get("datasets", {}).get(dataset)
    if not isinstance(metrics, dict) or not {"Rank-1", "mAP"} <= set(metrics):
        return None
    return metrics
