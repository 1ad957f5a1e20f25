"""The config file a command reads (`--config`): every problem printed, or the validated Config.

edged.config (pydantic, the decoders' numpy) is imported on the first load, not with this module: `edged
run` installs its signal handlers before anything slow is imported (edged/daemon/signals.py says why).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edged.config.schema import Config

DEFAULT_CONFIG = "/etc/edged/edged.yaml"
STDIN = "-"  # the file name that means standard input (clig.dev)
STDIN_NAME = "<stdin>"  # how problems in it are located: `<stdin>:5:9: mqtt.port: ...`


_stdin: dict[str, str] = {}  # the config read from standard input, kept for a second load


def load_or_report(path: str, require_cameras: bool = False, check_files: bool = True) -> Config | None:
    """The config, or None after printing every problem (the command then exits 78, EX_CONFIG).
    `path` "-" reads the config from standard input (once: a second load reuses it); its relative paths
    are then relative to the current folder. `check_files=False`: the schema and references only (no
    model file is opened)."""
    from edged.config.loader import load_config
    from edged.config.problems import ConfigError, Problem

    text = None
    try:
        if path == STDIN:
            path = STDIN_NAME
            if STDIN_NAME not in _stdin:
                try:
                    _stdin[STDIN_NAME] = sys.stdin.buffer.read().decode("utf-8")
                except UnicodeDecodeError:
                    raise ConfigError([Problem(path, 0, 0, "", "config is not UTF-8 text")]) from None
            text = _stdin[STDIN_NAME]
        return load_config(path, require_cameras=require_cameras, check_files=check_files, text=text)
    except ConfigError as e:
        n = len(e.problems)
        print(f"edged: config {path}: {n} problem{'s' if n > 1 else ''}:\n{e}", file=sys.stderr)
        return None
