"""A training run stopped by its machine, not by its config: a full disk, a read-only or
unwritable OUTPUT_DIR, its dataset gone mid-run. `explained_interruptions(output_dir)` turns
such an error into one StorageError line naming the file and what to do (the last complete
checkpoint and `--resume`); nothing is lost, since every file is written atomically
(lastreid.atomic). `check_output_dir` refuses an OUTPUT_DIR that cannot be written before
anything is. `QuietKnownErrors` keeps the traceback of these errors out of the log, where
fastreid's train loop would print it before the tool prints its line.
"""

import logging
import os
from contextlib import contextmanager

from .errors import LastreidError, StorageError, one_line, storage_problem
from .images import BadImageError

__all__ = ["explained_interruptions", "check_output_dir", "QuietKnownErrors"]

POINTER = "last_checkpoint"  # fastreid's Checkpointer names the newest checkpoint in it


def _chain(error):
    seen = []
    while error is not None and error not in seen:
        seen.append(error)
        error = error.__cause__ or error.__context__
    return seen  # newest first


def _machine_error(error):
    """The error of `error`'s chain the machine caused, with what it says (the oldest one
    that names a file: a later write in fastreid's clean-up may fail the same way), or
    None when the chain has none."""
    named, bare = None, None
    for link in _chain(error):
        if isinstance(link, StorageError):
            named = (link, str(link))
        elif isinstance(link, BadImageError) and link.path and not os.path.exists(link.path):
            named = (link, f"{link}: the dataset changed during the run")
        elif storage_problem(link):
            where = getattr(link, "filename", None)
            text = f"cannot write {where}: " if where else ""
            bare = (link, text + storage_problem(link))
    return named or bare


def _what_to_do(error, text):
    if isinstance(error, BadImageError):
        return "put the dataset back"
    if any(word in text for word in ("space", "quota", "torch.save")):
        return "free space on that disk"
    return "make OUTPUT_DIR writable"


def _last_checkpoint(output_dir):
    try:
        with open(os.path.join(output_dir, POINTER)) as f:
            name = f.read().strip()
    except OSError:
        return None
    path = os.path.join(output_dir, name)
    return path if name and os.path.isfile(path) else None


@contextmanager
def explained_interruptions(output_dir):
    """Re-raises an error the machine caused in the block as a StorageError of one line:
    the file, the problem, the last complete checkpoint of `output_dir` and `--resume`.
    Other errors pass unchanged."""
    try:
        yield
    except Exception as error:
        found = _machine_error(error)
        if found is None:
            raise
        cause, text = found
        fix = _what_to_do(cause, text)
        last = _last_checkpoint(output_dir)
        if last:
            advice = (
                f"nothing is lost: the last complete checkpoint is {last}; {fix}, then run "
                f"the same command with --resume"
            )
        else:
            advice = f"no checkpoint was written yet: {fix}, then run the same command again"
        raise StorageError(f"{one_line(text)}; {advice}") from error


def check_output_dir(output_dir):
    """Raises StorageError (one line) when OUTPUT_DIR cannot be made or written: its nearest
    existing folder is a file, read-only or not writable by this user."""
    path = os.path.abspath(output_dir or ".")
    existing = path
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise StorageError(
            f"OUTPUT_DIR {output_dir}: {existing} is a file, not a folder: choose another "
            f"OUTPUT_DIR"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise StorageError(
            f"OUTPUT_DIR {output_dir}: {existing} is read-only or not writable by this user: "
            f"make it writable or choose another OUTPUT_DIR"
        )


class QuietKnownErrors(logging.Filter):
    """fastreid's train loop logs every exception with its traceback ("Exception during
    training:") before re-raising it; for the errors the tool prints as one line (ours and
    the machine's) the log gets that line instead of the traceback."""

    def filter(self, record):
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and (isinstance(error, LastreidError) or _machine_error(error)):
            record.msg = f"{record.getMessage()} {type(error).__name__}: {one_line(error)}"
            record.args, record.exc_info, record.exc_text = (), None, None
        return True
