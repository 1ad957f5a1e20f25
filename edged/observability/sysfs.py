"""Device readings straight from sysfs/procfs: temperatures, INA3221 power rails, GPU load and clocks, CPU
clocks and load, memory, throttling, the nvpmodel mode from its files. The same files jtop reads.

`root` is the filesystem root the files are read under: "/" on a device, a fake tree in tests.
Readers never raise: a missing or unreadable file is simply absent from the result, because kernels and
JetPack releases move these files around and telemetry must never take the daemon down.
No threads of its own; `Telemetry` (telemetry.py) calls it under its lock.
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path
from typing import Any

# GPU load (per mille) and devfreq nodes across JetPack 4/5/6 and Jetson generations.
GPU_LOAD_FILES = (
    "sys/devices/platform/gpu.0/load",
    "sys/devices/gpu.0/load",
    "sys/devices/platform/bus@0/17000000.gpu/load",
    "sys/devices/platform/17000000.ga10b/load",
    "sys/devices/platform/17000000.gv11b/load",
)
GPU_DEVFREQ_RE = re.compile(r"(gpu|ga10b|gv11b|gp10b|gm20b)", re.IGNORECASE)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace").strip().strip("\x00")
    except OSError:  # absent, EACCES, or EINVAL (some thermal zones fail to read while powered down)
        return None


def _num(path: Path) -> float | None:
    text = _read(path)
    if text is None:
        return None
    try:
        return float(text.split()[0])
    except (ValueError, IndexError):
        return None


def _sorted_glob(root: Path, pattern: str) -> list[Path]:
    def key(p: Path) -> tuple[str, int]:
        m = re.search(r"(\d+)$", p.name)
        return (re.sub(r"\d+$", "", p.name), int(m.group(1)) if m else -1)

    return sorted(root.glob(pattern), key=key)


class SysfsReader:
    """Reads one round of telemetry readings from a (real or fake) sysfs/procfs tree under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def jetson(self) -> dict[str, Any]:
        rel = _read(self.root / "etc/nv_tegra_release")
        if rel is None:
            return {"available": False, "reason": "not a Jetson (no /etc/nv_tegra_release)"}
        out: dict[str, Any] = {"available": True, "reason": None}
        # "# R36 (release), REVISION: 3.0, GCID: ..., BOARD: generic, EABI: aarch64, DATE: ..."
        m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", rel)
        if m:
            out["l4t"] = f"{m.group(1)}.{m.group(2)}"
        model = _read(self.root / "proc/device-tree/model")
        if model:
            out["model"] = model
        return out

    def temperatures(self) -> dict[str, float]:
        temps: dict[str, float] = {}
        for zone in _sorted_glob(self.root, "sys/devices/virtual/thermal/thermal_zone*"):
            name = _read(zone / "type") or zone.name
            milli = _num(zone / "temp")
            # Powered-down zones report -256 °C or so; they are not a reading.
            if milli is None or milli <= -40000:
                continue
            key = name if name not in temps else f"{name}_{zone.name}"
            temps[key] = round(milli / 1000.0, 1)
        return temps

    def power(self) -> dict[str, dict[str, float]]:
        """INA3221 rails: hwmon layout (JetPack 5/6) or iio layout (JetPack 4)."""
        rails: dict[str, dict[str, float]] = {}
        for hw in _sorted_glob(self.root, "sys/bus/i2c/drivers/ina3221*/*/hwmon/hwmon*"):
            for label_file in _sorted_glob(hw, "in*_label"):
                ch = label_file.name[2:].split("_")[0]
                label = _read(label_file)
                mv, ma = _num(hw / f"in{ch}_input"), _num(hw / f"curr{ch}_input")
                if not label or mv is None or ma is None or label.upper().startswith("SUM"):
                    continue
                rails[label] = {
                    "voltage_mv": mv,
                    "current_ma": ma,
                    "power_mw": round(mv * ma / 1000.0, 1),
                }
        for dev in _sorted_glob(self.root, "sys/bus/i2c/drivers/ina3221x/*/iio:device*"):
            for name_file in _sorted_glob(dev, "rail_name_*"):
                ch = name_file.name.rsplit("_", 1)[1]
                label, mw = _read(name_file), _num(dev / f"in_power{ch}_input")
                if not label or mw is None:
                    continue
                rail = {"power_mw": mw}
                for key, f in (("voltage_mv", "in_voltage"), ("current_ma", "in_current")):
                    v = _num(dev / f"{f}{ch}_input")
                    if v is not None:
                        rail[key] = v
                rails[label] = rail
        return rails

    def gpu(self) -> dict[str, Any] | None:
        out: dict[str, Any] = {}
        for rel in GPU_LOAD_FILES:
            load = _num(self.root / rel)
            if load is not None:
                out["load_pct"] = round(load / 10.0, 1)  # the driver reports per mille
                break
        for dev in _sorted_glob(self.root, "sys/class/devfreq/*"):
            if not GPU_DEVFREQ_RE.search(dev.name):
                continue
            for key, f in (("freq_mhz", "cur_freq"), ("min_mhz", "min_freq"), ("max_mhz", "max_freq")):
                hz = _num(dev / f)
                if hz is not None:
                    out[key] = round(hz / 1e6, 1)
            break
        return out or None

    def cpu(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        loadavg = _read(self.root / "proc/loadavg")
        if loadavg:
            with contextlib.suppress(ValueError):
                out["load"] = [float(x) for x in loadavg.split()[:3]]
        freqs: dict[str, float] = {}
        for cpu in _sorted_glob(self.root, "sys/devices/system/cpu/cpu[0-9]*"):
            khz = _num(cpu / "cpufreq/scaling_cur_freq")
            if khz is not None:
                freqs[cpu.name] = round(khz / 1000.0, 1)
        if freqs:
            out["freq_mhz"] = freqs
        return out

    def memory(self) -> dict[str, float] | None:
        text = _read(self.root / "proc/meminfo")
        if not text:
            return None
        kb = {}
        for line in text.splitlines():
            m = re.match(r"(\w+):\s+(\d+)", line)
            if m:
                kb[m.group(1)] = int(m.group(2))
        if "MemTotal" not in kb or "MemAvailable" not in kb:
            return None
        # Jetsons share this memory between CPU and GPU, so "used" is what the models compete for.
        return {
            "total_mb": round(kb["MemTotal"] / 1024, 1),
            "used_mb": round((kb["MemTotal"] - kb["MemAvailable"]) / 1024, 1),
        }

    def throttling(self) -> dict[str, Any]:
        """Cooling devices that are engaged and soctherm over-current event counters."""
        cooling: dict[str, str] = {}
        for dev in _sorted_glob(self.root, "sys/devices/virtual/thermal/cooling_device*"):
            cur, top = _num(dev / "cur_state"), _num(dev / "max_state")
            kind = _read(dev / "type") or dev.name
            # Fans are cooling devices too but spinning up is not throttling.
            if cur and top and "fan" not in kind.lower():
                cooling[kind] = f"{int(cur)}/{int(top)}"
        oc: dict[str, int] = {}
        for f in _sorted_glob(self.root, "sys/class/hwmon/hwmon*/oc*_event_cnt"):
            n = _num(f)
            if n is not None:
                oc[f.name.removesuffix("_event_cnt")] = int(n)
        return {"active": bool(cooling) or any(oc.values()), "cooling": cooling, "oc_events": oc}

    def nvpmodel_from_files(self) -> dict[str, Any] | None:
        """The current mode from nvpmodel's status file and the name from /etc/nvpmodel.conf."""
        status = _read(self.root / "var/lib/nvpmodel/status")
        if not status:
            return None
        m = re.search(r"pmode:(\d+)", status)
        if not m:
            return None
        mode_id = int(m.group(1))
        out: dict[str, Any] = {"id": mode_id}
        conf = _read(self.root / "etc/nvpmodel.conf") or ""
        for cm in re.finditer(r"<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=(\S+?)\s*>", conf):
            if int(cm.group(1)) == mode_id:
                out["mode"] = cm.group(2)
        return out
