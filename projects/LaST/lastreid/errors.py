"""The errors lastreid raises on purpose, and how the tools print them.

Every such error derives from `LastreidError` and carries a one-line message that names the
file or key at fault and what was expected. The tools catch exactly these (`run_tool`) and
print `<tool>: error: <message>`; anything else is a bug and keeps its traceback.
"""

import errno
import os
import sys

__all__ = [
    "LastreidError",
    "ConfigError",
    "ConfigKeyError",
    "InputError",
    "MissingFileError",
    "ExistingFileError",
    "StorageError",
    "storage_problem",
    "one_line",
    "report_error",
    "run_tool",
]


class LastreidError(Exception):
    """Base of the errors a user can fix: bad config, dataset layout, checkpoint, image."""


class ConfigError(LastreidError, ValueError):
    """A config value that cannot be used."""


class ConfigKeyError(LastreidError, KeyError):
    """An unknown config key or registry name (a KeyError, like yacs' and fastreid's)."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""  # KeyError would quote it


class InputError(LastreidError, ValueError):
    """A command-line argument or input file whose content cannot be used."""


class MissingFileError(LastreidError, FileNotFoundError):
    """A file or folder the user named does not exist."""


class ExistingFileError(LastreidError, FileExistsError):
    """A file or folder in the way that a tool will not overwrite."""


class StorageError(LastreidError, OSError):
    """A file the machine would not let a tool write: a full disk, a read-only or unwritable
    folder. The message names the file; the tools add what to do (train_net: the last
    complete checkpoint and --resume)."""


# The OSError numbers that say the machine refused a write, not that the code is wrong.
_REFUSALS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
# torch.save's zip writer reports a short write (the disk filled inside it) as a
# RuntimeError, e.g. "[enforce fail at inline_container.cc:672] . unexpected pos 50196864
# vs 50196760", without an errno.
_TORCH_SHORT_WRITE = ("inline_container.cc", "PytorchStreamWriter failed")


def storage_problem(error):
    """What the machine refused in `error`, as a phrase ("no space left on device"), or
    None for any other error."""
    if isinstance(error, StorageError):
        return str(error)
    if isinstance(error, OSError) and error.errno in _REFUSALS:
        return f"{_REFUSALS[error.errno]} (errno {error.errno})"
    if isinstance(error, RuntimeError) and any(s in str(error) for s in _TORCH_SHORT_WRITE):
        return f"torch.save wrote less than it had (a full disk): {one_line(error, 120)}"
    return None


def one_line(text, limit=None):
    """`text` with every run of whitespace (newlines included) collapsed to one space,
    shortened to `limit` characters if given."""
    text = " ".join(str(text).split())
    if limit is not None and len(text) > limit:
        text = text[: limit - 3] + "..."
    return text


def report_error(message):
    """Prints `<tool>: error: <message>` (one line) on stderr; <tool> is the script's name.
    Under torchrun every process meets the same problem: only rank 0 says it."""
    if os.environ.get("RANK", "0") != "0":
        return
    tool = os.path.basename(sys.argv[0]) or "lastreid"
    print(f"{tool}: error: {one_line(message)}", file=sys.stderr, flush=True)


def run_tool(main, *args):
    """Runs a tool's `main(*args)` and exits with its return value; a `LastreidError` ends
    the process with status 1 and `report_error`'s single line."""
    try:
        code = main(*args)
    except LastreidError as error:
        report_error(error)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
