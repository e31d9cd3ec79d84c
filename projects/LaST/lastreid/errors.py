"""The errors lastreid raises on purpose, and how the tools print them.

Every such error derives from `LastreidError` and carries a one-line message that names the
file or key at fault and what was expected. The tools catch exactly these (`run_tool`) and
print `<tool>: error: <message>`; anything else is a bug and keeps its traceback.
"""

import os
import sys

__all__ = [
    "LastreidError",
    "ConfigError",
    "ConfigKeyError",
    "InputError",
    "MissingFileError",
    "ExistingFileError",
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
