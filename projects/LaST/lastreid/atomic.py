"""Atomic file writing, used for every file a run or a tool writes: a temporary file in the
same folder, fsync, then a rename, so a kill at any moment leaves either the old file or the
whole new one. `remove_stale_temp_files` clears what killed writers left behind."""

import logging
import os
import re

import torch

from .errors import StorageError, storage_problem

logger = logging.getLogger(__name__)

__all__ = [
    "write_atomic",
    "write_file_atomic",
    "save_atomic",
    "write_text_atomic",
    "write_bytes_atomic",
    "remove_stale_temp_files",
    "TEMP_FILE",
]

# The temporary name `write_atomic` gives a file `<name>`: `.<name>.tmp.<pid>.<8 hex digits>`.
TEMP_FILE = re.compile(r"^\..+\.tmp\.(\d+)\.[0-9a-f]{8}$")


def _fsync_dir(folder):
    """Makes a rename in `folder` durable (best effort: not every OS / FS supports it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _temporary(path):
    """(folder, temporary path next to `path`, an open descriptor of it): the TEMP_FILE name.
    0o666 and O_EXCL: the final file gets the usual umask permissions, and a name clash with
    another writer fails instead of mixing two writes."""
    folder = os.path.dirname(os.path.abspath(path))
    name = os.path.basename(path)
    tmp = os.path.join(folder, f".{name}.tmp.{os.getpid()}.{os.urandom(4).hex()}")
    return folder, tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)


def _discard(tmp):
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass


def _refused(path, error):
    """A StorageError naming `path` for an error that says the machine refused the write (a
    full disk, a read-only folder), else None (the error is raised as it is)."""
    problem = storage_problem(error)
    return problem and StorageError(f"cannot write {path}: {problem}")


def write_atomic(path, write):
    """Calls `write(fileobj)` on a fresh temporary file next to `path`, then renames it
    onto `path`. On any failure the temporary file is removed and `path` is untouched; a
    full disk or an unwritable folder is a StorageError naming `path`."""
    path = os.fspath(path)
    try:
        folder, tmp, fd = _temporary(path)
    except OSError as error:
        raise (_refused(path, error) or error) from error
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        _discard(tmp)
        refused = _refused(path, error)
        if refused:
            raise refused from error
        raise
    _fsync_dir(folder)


def write_file_atomic(path, produce):
    """`write_atomic` for writers that take a file name (an exporter): `produce(tmp)` writes
    the whole file at a temporary path next to `path`, which is then renamed onto it."""
    path = os.fspath(path)
    try:
        folder, tmp, fd = _temporary(path)
    except OSError as error:
        raise (_refused(path, error) or error) from error
    os.close(fd)
    try:
        produce(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        _discard(tmp)
        refused = _refused(path, error)
        if refused:
            raise refused from error
        raise
    _fsync_dir(folder)


def save_atomic(obj, path):
    """`torch.save(obj, path)`, but a crash or kill at any point leaves either the old
    file or the complete new one at `path`, never a partial file."""
    write_atomic(path, lambda f: torch.save(obj, f))


def write_text_atomic(text, path):
    """Writes a small text file (e.g. the `last_checkpoint` pointer) atomically."""
    data = text.encode("utf-8")
    write_atomic(path, lambda f: f.write(data))


def write_bytes_atomic(data, path):
    """Writes `data` (bytes) atomically, e.g. a PNG rendered in memory."""
    write_atomic(path, lambda f: f.write(data))


def _process_gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # e.g. PermissionError: someone else's live process
        return False
    return False


def remove_stale_temp_files(folder):
    """Removes the temporary files of atomic writes whose writer process is gone."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return removed
    for entry in entries:
        found = TEMP_FILE.match(entry.name)
        if (
            found
            and entry.is_file()
            and int(found.group(1)) != os.getpid()
            and _process_gone(int(found.group(1)))
        ):
            try:
                os.unlink(entry.path)
                removed.append(entry.name)
            except FileNotFoundError:
                pass
    if removed:
        logger.info(
            "Removed temporary files of interrupted writes in %s: %s", folder, ", ".join(removed)
        )
    return removed
