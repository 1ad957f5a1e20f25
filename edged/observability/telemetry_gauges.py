"""Device telemetry as Prometheus gauges, computed at scrape time from the (cached) readings.

`register_gauges(telemetry, registry)` adds them to the shared Metrics registry (edged/observability/
metrics.py); /metrics (the health server's HTTP threads) then reads them, so they are never stale.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from edged.observability.telemetry import Telemetry

log = logging.getLogger(__name__)


class _TelemetryCollector(Collector):
    """Gauges computed at scrape time from the (cached) readings, so /metrics is never stale."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def describe(self) -> Iterator[Any]:
        return iter(())  # unchecked collector: the set of labels depends on the board

    def collect(self) -> Iterator[Any]:
        try:
            s = self.telemetry.readings()
        except Exception:  # never break a scrape of the pipeline's own metrics
            log.exception("telemetry readings failed")
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
