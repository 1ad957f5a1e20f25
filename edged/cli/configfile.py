"""The config file a command reads (`--config`): every problem printed, or the validated Config.

edged.config (pydantic, the decoders' numpy) is imported on the first load, not with this module: `edged
run` installs its signal handlers before anything slow is imported (edged/daemon/signals.py says why).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from edged.config import Config

DEFAULT_CONFIG = "/etc/edged/edged.yaml"


def load_or_report(path: str, require_cameras: bool = False, check_files: bool = True) -> Config | None:
    """The config, or None after printing every problem (the command then exits 78, EX_CONFIG).
    `check_files=False`: the schema and references only (no model file is opened)."""
    from edged.config import ConfigError, load_config

    try:
        return load_config(path, require_cameras=require_cameras, check_files=check_files)
    except ConfigError as e:
        n = len(e.problems)
        print(f"edged: config {path}: {n} problem{'s' if n > 1 else ''}:\n{e}", file=sys.stderr)
        return None
