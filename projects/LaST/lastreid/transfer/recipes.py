"""Never a table of mixed recipes: every finished (or started) run a command would reuse,
cells and trained sources alike, must have been made with the merged config this command
gives it. `settle_stale` finds the ones that were not and, as `--stale` says, stops with one
line naming them (stop), redoes them (redo) or keeps them on purpose (reuse)."""

import os
import shutil

from ..errors import InputError, MissingFileError
from ..run_results import config_sha256, run_config_sha256
from ..startup import build_cfg
from .results import read_json
from .sources import weights_signature
from .training import source_recipe

__all__ = [
    "STALE_CHOICES",
    "add_stale_option",
    "recipe_sha256",
    "settle",
    "settle_stale",
    "stale_runs",
]

STALE_CHOICES = ("stop", "redo", "reuse")


def add_stale_option(parser):
    """--stale of the table tools: what to do with runs of another recipe (settle_stale)."""
    parser.add_argument(
        "--stale",
        choices=STALE_CHOICES,
        default="stop",
        help="finished or started runs made with another recipe (config file or overrides) "
        "than this command's: stop (say which, run nothing), redo them, or reuse their numbers",
    )


def recipe_sha256(config, opts, eval_only=False):
    """The hash train_net.py gives the merged config of `config` + `opts`
    (lastreid.run_results.config_sha256); None if that config cannot be built yet (e.g. a
    direct cell whose source is still to be trained)."""
    try:
        return config_sha256(build_cfg(config, opts, eval_only=eval_only))
    except MissingFileError:
        return None


def _differs(found, expected):
    return found is not None and expected is not None and found != expected


def stale_runs(matrix):
    """[(title, paths to remove to redo it)] of the trained sources and cells whose stored
    numbers or run folder come from another recipe than `matrix`'s."""
    stale = []
    for source in matrix.trained_runs():
        out = matrix.source_dir(source)
        if _differs(run_config_sha256(out), recipe_sha256(*source_recipe(matrix, source))):
            stale.append(("source " + source.name + source.run_suffix, [out]))
    for cell in (c for c in matrix.cells() if not c.is_source):
        weights = matrix.weights(matrix.model_source(cell))
        if not os.path.isfile(weights):
            continue  # nothing of it can be reused: its source is still to be made
        expected = recipe_sha256(*matrix.recipe(cell))
        stored = read_json(matrix.result_path(cell))
        reused = stored.get("weights_signature") == weights_signature(weights)
        found = stored.get("config_sha256", "none") if reused else None
        if found is None and cell.setting == "finetune":  # a fine-tune started or finished
            found = run_config_sha256(matrix.cell_dir(cell))
        if _differs(found, expected):
            stale.append((cell.title, [matrix.result_path(cell), matrix.cell_dir(cell)]))
    return stale


def settle_stale(matrix, policy="stop"):
    """Applies `policy` (STALE_CHOICES) to `stale_runs(matrix)`; returns their titles."""
    return settle(stale_runs(matrix), matrix.output, policy, matrix.log)


def settle(stale, where, policy="stop", log=print, tag="[transfer]"):
    """Applies `policy` to `stale`, [(title, paths to remove to redo it)] of the runs under
    `where`: stop (one line naming them), redo (remove the paths) or reuse (keep them, with
    a note). Returns their titles."""
    titles = [title for title, _ in stale]
    if not stale:
        return titles
    if policy == "stop":
        raise InputError(
            "{} run(s) under {} were made with another recipe (config file or overrides) than "
            "this command's: {}; run again with --stale redo to redo them, or --stale reuse "
            "to keep their numbers".format(len(stale), where, "; ".join(titles))
        )
    for title, paths in stale:
        if policy == "redo":
            log("{} {}: made with another recipe: redoing it".format(tag, title))
            for path in paths:
                if os.path.isdir(path):
                    shutil.rmtree(path)
                elif os.path.exists(path):
                    os.remove(path)
        else:
            log("{} note: {}: made with another recipe, kept (--stale reuse)".format(tag, title))
    return titles
