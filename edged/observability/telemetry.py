"""Device telemetry: temperatures, power rails, GPU load/clock, CPU clocks, throttling, nvpmodel mode.

On a Jetson the numbers come from jtop (jetson-stats, jtop.py) when it is importable and its service
answers, else straight from sysfs (sysfs.py, the same files jtop reads). Other machines get the same
section with `available: false` and the reason, plus whatever generic values their sysfs/procfs has
(CPU temperature, load, clocks), so dashboards need one shape only.

Consumers: `Telemetry.readings()` (a dict for /stats and the MQTT `<prefix>/stats` topic, which
edged/publish/stats.py sends) and the Prometheus gauges read at scrape time (telemetry_gauges.py).
Threads: any (HTTP, stats publisher, scrapes); a lock guards the cached readings.
"""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from edged.observability.jtop import merge_jtop
from edged.observability.sysfs import SysfsReader

log = logging.getLogger(__name__)

NVPMODEL_CACHE_S = 60.0  # the power mode changes only by hand; don't fork nvpmodel on every /stats


def parse_nvpmodel_q(text: str) -> dict[str, Any] | None:
    """`nvpmodel -q` prints "NV Power Mode: 15W" and the id on the next line."""
    m = re.search(r"NV Power Mode:\s*(\S+)\s*\n\s*(\d+)", text)
    if not m:
        return None
    return {"mode": m.group(1), "id": int(m.group(2))}


class Telemetry:
    """One device's telemetry; `readings()` are cached for `max_age_s` so scrapes and /stats stay cheap."""

    def __init__(
        self,
        root: Path | str = "/",
        *,
        use_jtop: bool = True,
        max_age_s: float = 2.0,
        nvpmodel_cmd: str | None = "nvpmodel",
    ) -> None:
        self.reader = SysfsReader(Path(root))
        self.use_jtop = use_jtop
        self.max_age_s = max_age_s
        self.nvpmodel_cmd = nvpmodel_cmd
        self._lock = threading.Lock()
        self._cache: tuple[float, dict[str, Any]] | None = None
        self._nvp: tuple[float, dict[str, Any] | None] | None = None
        self._jtop_failed = False

    def readings(self) -> dict[str, Any]:
        with self._lock:
            now = time.monotonic()
            if self._cache is not None and now - self._cache[0] < self.max_age_s:
                return self._cache[1]
            readings = self._collect()
            self._cache = (now, readings)
            return readings

    def _collect(self) -> dict[str, Any]:
        r = self.reader
        jetson = r.jetson()
        readings: dict[str, Any] = {
            "jetson": jetson,
            "source": "sysfs",
            "temperatures_c": r.temperatures(),
            "power_mw": r.power(),
            "gpu": r.gpu(),
            "cpu": r.cpu(),
            "memory": r.memory(),
            "throttling": r.throttling(),
            "nvpmodel": self._nvpmodel() if jetson["available"] else None,
        }
        if jetson["available"] and self.use_jtop:
            self._merge_jtop(readings)
        missing = [k for k in ("temperatures_c", "power_mw", "gpu", "nvpmodel") if not readings[k]]
        if missing:
            # Say why a dashboard panel is empty instead of leaving people to guess.
            readings["unavailable"] = {
                k: jetson["reason"] or "not exposed by this kernel/JetPack" for k in missing
            }
        return readings

    def _nvpmodel(self) -> dict[str, Any] | None:
        now = time.monotonic()
        if self._nvp is not None and now - self._nvp[0] < NVPMODEL_CACHE_S:
            return self._nvp[1]
        found = None
        exe = shutil.which(self.nvpmodel_cmd) if self.nvpmodel_cmd else None
        if exe:
            try:
                r = subprocess.run([exe, "-q"], capture_output=True, text=True, timeout=5)
                found = parse_nvpmodel_q(r.stdout)
            except (OSError, subprocess.TimeoutExpired) as e:
                log.debug("nvpmodel -q failed: %s", e)
        if found is None:
            found = self.reader.nvpmodel_from_files()
        self._nvp = (now, found)
        return found

    def _merge_jtop(self, readings: dict[str, Any]) -> None:
        """Overlay jtop's readings; after one failure, keep to sysfs for good (no retry per reading)."""
        if not self._jtop_failed and not merge_jtop(readings):
            self._jtop_failed = True
