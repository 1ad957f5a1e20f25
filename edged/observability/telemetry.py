"""Device telemetry: temperatures, power rails, GPU load/clock, CPU clocks, throttling, nvpmodel mode.

On a Jetson the numbers come from jtop (jetson-stats) when it is importable and its service answers,
else straight from sysfs (the same files jtop reads). Other machines get the same section with
`available: false` and the reason, plus whatever generic values their sysfs/procfs has (CPU temperature,
load, clocks), so dashboards need one shape only.

`root` is the filesystem root the files are read under: "/" on a device, a fake tree in tests.
Readers never raise: a missing or unreadable file is simply absent from the snapshot, because kernels and
JetPack releases move these files around and telemetry must never take the daemon down.

Consumers: `Telemetry.snapshot()` (a dict for /stats and MQTT `<prefix>/stats`), `register_gauges()`
(prometheus gauges read at scrape time on the shared registry) and `StatsPublisher` (the periodic topic).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

log = logging.getLogger(__name__)

# GPU load (per mille) and devfreq nodes across JetPack 4/5/6 and Jetson generations.
GPU_LOAD_FILES = (
    "sys/devices/platform/gpu.0/load",
    "sys/devices/gpu.0/load",
    "sys/devices/platform/bus@0/17000000.gpu/load",
    "sys/devices/platform/17000000.ga10b/load",
    "sys/devices/platform/17000000.gv11b/load",
)
GPU_DEVFREQ_RE = re.compile(r"(gpu|ga10b|gv11b|gp10b|gm20b)", re.IGNORECASE)
NVPMODEL_CACHE_S = 60.0  # the power mode changes only by hand; don't fork nvpmodel on every /stats


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
    """Reads one snapshot's worth of values from a (real or fake) sysfs/procfs tree under `root`."""

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


def parse_nvpmodel_q(text: str) -> dict[str, Any] | None:
    """`nvpmodel -q` prints "NV Power Mode: 15W" and the id on the next line."""
    m = re.search(r"NV Power Mode:\s*(\S+)\s*\n\s*(\d+)", text)
    if not m:
        return None
    return {"mode": m.group(1), "id": int(m.group(2))}


class Telemetry:
    """One device's telemetry; `snapshot()` is cached for `max_age_s` so scrapes and /stats stay cheap."""

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

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            now = time.monotonic()
            if self._cache is not None and now - self._cache[0] < self.max_age_s:
                return self._cache[1]
            snap = self._collect()
            self._cache = (now, snap)
            return snap

    def _collect(self) -> dict[str, Any]:
        r = self.reader
        jetson = r.jetson()
        snap: dict[str, Any] = {
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
            self._merge_jtop(snap)
        missing = [k for k in ("temperatures_c", "power_mw", "gpu", "nvpmodel") if not snap[k]]
        if missing:
            # Say why a dashboard panel is empty instead of leaving people to guess.
            snap["unavailable"] = {
                k: jetson["reason"] or "not exposed by this kernel/JetPack" for k in missing
            }
        return snap

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

    def _merge_jtop(self, snap: dict[str, Any]) -> None:
        """Overlay jtop's readings (it knows every board's quirks); silently keep sysfs when it fails."""
        if self._jtop_failed:
            return
        try:
            from jtop import jtop  # jetson-stats; its service must be running

            with jtop() as j:
                stats = dict(j.stats)
        except Exception as e:  # ImportError, jtop.JtopException, socket errors
            self._jtop_failed = True
            log.info("telemetry: jtop not usable (%s: %s); reading sysfs", type(e).__name__, e)
            return
        snap["source"] = "jtop"
        for key, value in stats.items():
            if not isinstance(value, (int, float)):
                if key == "nvp model" and isinstance(value, str):
                    snap["nvpmodel"] = {**(snap["nvpmodel"] or {}), "mode": value}
                continue
            if key.startswith("Temp "):
                snap["temperatures_c"][key[5:]] = float(value)
            elif key.startswith("Power ") and key != "Power TOT":
                snap["power_mw"].setdefault(key[6:], {})["power_mw"] = float(value)
            elif key == "GPU":
                snap["gpu"] = {**(snap["gpu"] or {}), "load_pct": float(value)}


# -- prometheus ----------------------------------------------------------------------------------


class _TelemetryCollector(Collector):
    """Gauges computed at scrape time from the (cached) snapshot, so /metrics is never stale."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def describe(self) -> Iterator[Any]:
        return iter(())  # unchecked collector: the set of labels depends on the board

    def collect(self) -> Iterator[Any]:
        try:
            s = self.telemetry.snapshot()
        except Exception:  # never break a scrape of the pipeline's own metrics
            log.exception("telemetry snapshot failed")
            return
        up = GaugeMetricFamily("edged_device_jetson", "1 on a Jetson (L4T found)")
        up.add_metric([], 1.0 if s["jetson"]["available"] else 0.0)
        yield up
        temp = GaugeMetricFamily(
            "edged_device_temperature_celsius", "Thermal zone temperature", labels=["zone"]
        )
        for zone, c in s["temperatures_c"].items():
            temp.add_metric([zone], c)
        yield temp
        power = GaugeMetricFamily("edged_device_power_watts", "Power per INA3221 rail", labels=["rail"])
        for rail, v in s["power_mw"].items():
            if "power_mw" in v:
                power.add_metric([rail], v["power_mw"] / 1000.0)
        yield power
        gpu = s["gpu"] or {}
        if "load_pct" in gpu:
            yield GaugeMetricFamily("edged_gpu_load_ratio", "GPU load (0..1)", value=gpu["load_pct"] / 100)
        if "freq_mhz" in gpu:
            yield GaugeMetricFamily("edged_gpu_frequency_hertz", "GPU clock", value=gpu["freq_mhz"] * 1e6)
        freq = GaugeMetricFamily("edged_cpu_frequency_hertz", "CPU core clock", labels=["cpu"])
        for cpu, mhz in s["cpu"].get("freq_mhz", {}).items():
            freq.add_metric([cpu], mhz * 1e6)
        yield freq
        thr = s["throttling"]
        yield GaugeMetricFamily(
            "edged_device_throttled",
            "1 while a cooling device or over-current throttle is engaged",
            value=1.0 if thr["active"] else 0.0,
        )
        if s["nvpmodel"] and "mode" in s["nvpmodel"]:
            info = InfoMetricFamily("edged_nvpmodel", "Jetson power mode (nvpmodel)")
            info.add_metric([], {"mode": str(s["nvpmodel"]["mode"])})
            yield info


def register_gauges(telemetry: Telemetry, registry: CollectorRegistry) -> Collector:
    """Add the device gauges to `registry` (the shared Metrics registry); returns the collector."""
    collector = _TelemetryCollector(telemetry)
    registry.register(collector)
    return collector


# -- the periodic <prefix>/stats topic ------------------------------------------------------------


class RawPublisher(Protocol):
    """What StatsPublisher needs of edged.publish.mqtt.MqttPublisher."""

    def publish_raw(self, topic: str, payload: bytes | str, retain: bool = False, qos: int = 0) -> Any: ...


class StatsPublisher:
    """Publishes {"ts", "status": status(), "telemetry": snapshot} to `topic` every `interval_s`.

    QoS 0, not retained and not through the outbox: a stats message is only worth its latest value, so
    while the broker is away they are skipped rather than queued.
    """

    def __init__(
        self,
        publisher: RawPublisher,
        topic: str,
        interval_s: float,
        status: Callable[[], dict[str, Any]],
        telemetry: Telemetry,
    ) -> None:
        self.publisher = publisher
        self.topic = topic
        self.interval_s = interval_s
        self.status = status
        self.telemetry = telemetry
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def payload(self) -> dict[str, Any]:
        status = dict(self.status())
        # The daemon's status may already carry the telemetry (for /stats): send it once, at the top.
        telemetry = status.pop("telemetry", None) or self.telemetry.snapshot()
        return {"ts": round(time.time(), 3), "status": status, "telemetry": telemetry}

    def publish_once(self) -> bool:
        """One message now; False when the broker is not connected (nothing is queued)."""
        try:
            body = json.dumps(self.payload(), default=str, separators=(",", ":"))
        except Exception:
            log.exception("stats: building the payload failed")
            return False
        return self.publisher.publish_raw(self.topic, body, retain=False, qos=0) is not None

    def start(self) -> None:
        if self.interval_s <= 0 or self._thread is not None:
            return  # stats_interval_s: 0 disables the topic
        self._thread = threading.Thread(target=self._loop, name="edged-stats", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _loop(self) -> None:
        # First message soon after start (once connected) so dashboards fill quickly, then every interval.
        wait = min(2.0, self.interval_s)
        while not self._stop.wait(wait):
            wait = self.interval_s if self.publish_once() else min(2.0, self.interval_s)
