"""MODEL.IMPORTS: modules a config needs imported before its model is built, so that a head
or meta-architecture registered outside lastreid (in fastreid's registries, with its range
rules in `lastreid.config_checks.register_rules`) is found by every tool.

`startup.build_cfg` imports them right after merging a config, before its values are
checked; every tool, every torchrun process and every run started from a run's
config.yaml goes through it. An entry is a module name on the Python path
(`my_heads.toy`) or a `.py` file; a relative file path is made absolute in the config, so
the run's config.yaml finds it from any folder.
"""

import hashlib
import importlib
import importlib.util
import os
import sys

from .errors import ConfigError

__all__ = ["import_plugins", "resolve_plugin_paths"]

KEY = "MODEL.IMPORTS"


def _is_file(entry):
    return entry.endswith(".py")


def resolve_plugin_paths(cfg):
    """MODEL.IMPORTS with each `.py` path made absolute (from the working folder), in place
    on an unfrozen cfg."""
    cfg.MODEL.IMPORTS = [
        os.path.abspath(entry) if _is_file(entry) else entry for entry in cfg.MODEL.IMPORTS
    ]
    return cfg


def _import_file(path):
    # One module per file whatever the name it is imported under: a second import would
    # register the same names in fastreid's registries again, which they refuse.
    digest = hashlib.sha1(path.encode()).hexdigest()[:10]
    name = f"lastreid_import_{os.path.splitext(os.path.basename(path))[0]}_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such file {path}")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def import_plugins(cfg):
    """Imports every entry of cfg.MODEL.IMPORTS (each once per process); ConfigError (one
    line naming the key and the entry) when one fails."""
    for entry in cfg.MODEL.IMPORTS:
        if not isinstance(entry, str) or not entry.strip():
            raise ConfigError(f"{KEY}: {entry!r} is not a module name or a .py file")
        try:
            if _is_file(entry):
                _import_file(entry)
            else:
                importlib.import_module(entry)
        except Exception as error:  # the module's own error, whatever it is, in one line
            raise ConfigError(
                f"{KEY}: cannot import {entry!r}: {type(error).__name__}: {error}"
            ) from error
