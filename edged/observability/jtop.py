"""jtop (jetson-stats) readings over the sysfs ones: jtop knows every board's quirks.

Its service must be running; when it is not importable or does not answer, the caller keeps the sysfs
readings (telemetry.py stops asking after the first failure). Called under `Telemetry`'s lock.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def merge_jtop(readings: dict[str, Any]) -> bool:
    """Overlay jtop's readings on the telemetry readings; False (readings unchanged) when jtop fails."""
    try:
        from jtop import jtop  # jetson-stats; its service must be running

        with jtop() as j:
            stats = dict(j.stats)
    except Exception as e:  # ImportError, jtop.JtopException, socket errors
        log.info("telemetry: jtop not usable (%s: %s); reading sysfs", type(e).__name__, e)
        return False
    readings["source"] = "jtop"
    for key, value in stats.items():
        if not isinstance(value, (int, float)):
            if key == "nvp model" and isinstance(value, str):
                readings["nvpmodel"] = {**(readings["nvpmodel"] or {}), "mode": value}
            continue
        if key.startswith("Temp "):
            readings["temperatures_c"][key[5:]] = float(value)
        elif key.startswith("Power ") and key != "Power TOT":
            readings["power_mw"].setdefault(key[6:], {})["power_mw"] = float(value)
        elif key == "GPU":
            readings["gpu"] = {**(readings["gpu"] or {}), "load_pct": float(value)}
    return True
