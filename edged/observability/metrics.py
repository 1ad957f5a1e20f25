"""Counters every stage records into, read by /metrics, /stats and the MQTT stats topic.

One `Metrics` object per daemon (its own prometheus CollectorRegistry, so tests can run several
daemons in one process). Stages get it passed in; nothing here starts threads or servers.

Exposition rules: no `_created` series (they doubled the series count and no dashboard reads them;
switched off process-wide, since prometheus_client has no per-registry switch), every label set of a
configured camera/stage/model exists at zero from the start (`init_labels`), so `increase()` sees the
first event, and names end in their unit. Renamed metrics keep their old name for one release as a
deprecated duplicate (`DEPRECATED_ALIASES`, documented in docs/operations.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, disable_created_metrics
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector

disable_created_metrics()

DROP_REASONS = ("stale", "error")
# edged.serving.slot.requests.RESULTS (kept here too: metrics imports nothing of the pipeline)
UPDATE_RESULTS = ("shadow_started", "switched", "forced", "refused", "rolled_back", "failed", "rejected")
# Why the outbox dropped an event: the one list of reasons. The `reason` label of
# edged_outbox_dropped_total (every one exists at 0 from the start), the keys of /stats
# mqtt.outbox_dropped and the reason named in the outbox's drop log lines (edged.publish.outbox.drops counts
# them; it lives here because observability imports nothing of publish).
OUTBOX_DROP_REASONS: dict[str, str] = {
    "disk_full": "nowhere to write it (disk full, I/O error, directory gone) and the in-memory hold was full",
    "size_cap": "the outbox was over mqtt.outbox.max_bytes",
    "age_cap": "older than mqtt.outbox.max_age_s",
    "corrupt": "unreadable on disk (bad CRC, torn record)",
    "refused": "the MQTT client refused its topic or payload (a retry cannot help)",
}
# old name -> new name; the old one is served (as a copy) until the next release, then removed.
DEPRECATED_ALIASES = {
    "edged_gpu_bytes_h2d_total": "edged_gpu_h2d_bytes_total",
    "edged_gpu_bytes_d2h_total": "edged_gpu_d2h_bytes_total",
}

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.frames = Counter(
            "edged_frames_total", "Frames taken from the source and processed", ["camera"], registry=r
        )
        self.drops = Counter(
            "edged_frames_dropped_total",
            "Frames not processed (reason: stale = a newer frame replaced it)",
            ["camera", "reason"],
            registry=r,
        )
        self.source_errors = Counter(
            "edged_source_errors_total", "Source open/read failures", ["camera"], registry=r
        )
        self.source_reconnects = Counter(
            "edged_source_reconnects_total", "Source reopen attempts", ["camera"], registry=r
        )
        self.stage_latency = Histogram(
            "edged_stage_latency_seconds",
            "Latency per chain stage (preprocess + inference + decode)",
            ["camera", "stage"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.frame_latency = Histogram(
            "edged_frame_latency_seconds",
            "Capture to event latency",
            ["camera"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.detections = Counter(
            "edged_detections_total", "Detections produced", ["camera", "stage"], registry=r
        )
        self.events = Counter(
            "edged_events_total", "Events produced (appended to the outbox)", ["camera"], registry=r
        )
        self.published = Counter(
            "edged_mqtt_published_total", "Events acknowledged by the broker", registry=r
        )
        self.outbox_depth = Gauge(
            "edged_outbox_events", "Events waiting in the outbox for a broker ack", registry=r
        )
        self.outbox_bytes = Gauge(
            "edged_outbox_bytes",
            "Bytes of the events not yet acknowledged by the broker (on disk or held in memory)",
            registry=r,
        )
        self.outbox_disk_bytes = Gauge(
            "edged_outbox_disk_bytes",
            "Bytes the outbox's files take in its directory (segments and ack logs)",
            registry=r,
        )
        self.outbox_age = Gauge(
            "edged_outbox_oldest_age_seconds", "Age of the oldest unacknowledged event", registry=r
        )
        self.outbox_dropped = Counter(
            "edged_outbox_dropped_total",
            "Events dropped from the outbox, by reason: "
            + "; ".join(f"{k} = {v}" for k, v in OUTBOX_DROP_REASONS.items()),
            ["reason"],
            registry=r,
        )
        self.mqtt_connected = Gauge("edged_mqtt_connected", "1 while connected to the broker", registry=r)
        self.mqtt_reconnects = Counter(
            "edged_mqtt_reconnects_total", "Broker connection attempts after a loss", registry=r
        )
        self.bytes_h2d = Counter(
            "edged_gpu_h2d_bytes_total", "Bytes uploaded host to device", ["camera"], registry=r
        )
        self.bytes_d2h = Counter(
            "edged_gpu_d2h_bytes_total", "Bytes downloaded device to host", ["camera"], registry=r
        )
        self.engine_info = Info("edged_engine", "Backend of each model", ["model"], registry=r)
        self.batch_rows = Histogram(
            "edged_batch_rows",
            "Rows (frames or crops) per cross-camera batched engine call",
            ["model"],
            buckets=(1, 2, 4, 8, 16, 32, 64),
            registry=r,
        )
        self.batch_wait = Histogram(
            "edged_batch_wait_seconds",
            "Time the oldest request of a batch waited for it to fill",
            ["model"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05),
            registry=r,
        )
        self.motion_frames = Counter(
            "edged_motion_frames_total",
            "Frames by the motion gate's decision (idle, lighting: chain skipped; start, motion, redetect, full_frame: chain ran)",
            ["camera", "decision"],
            registry=r,
        )
        self.model_updates = Counter(
            "edged_model_updates_total",
            "Live model update steps (shadow_started; switched, forced, refused, rolled_back, failed, rejected)",
            ["model", "result"],
            registry=r,
        )
        self.camera_up = Gauge(
            "edged_camera_up", "1 while the camera delivers frames", ["camera"], registry=r
        )
        for reason in OUTBOX_DROP_REASONS:
            self.outbox_dropped.labels(reason=reason)
        counters = {"edged_gpu_h2d_bytes_total": self.bytes_h2d, "edged_gpu_d2h_bytes_total": self.bytes_d2h}
        r.register(_DeprecatedAliases({old: counters[new] for old, new in DEPRECATED_ALIASES.items()}))

    def init_labels(self, cameras: Mapping[str, Iterable[str]], models: Iterable[str]) -> None:
        """Create every label set of the configured cameras (camera -> its stage names) and models at
        zero, so each series exists from the first scrape. Safe to call again after a reload."""
        for cam, stages in cameras.items():
            for metric in (
                self.frames,
                self.source_errors,
                self.source_reconnects,
                self.frame_latency,
                self.events,
                self.bytes_h2d,
                self.bytes_d2h,
                self.camera_up,
            ):
                metric.labels(cam)
            for reason in DROP_REASONS:
                self.drops.labels(cam, reason)
            for stage in stages:
                self.stage_latency.labels(cam, stage)
                self.detections.labels(cam, stage)
        for model in models:
            self.batch_rows.labels(model)
            self.batch_wait.labels(model)
            for result in UPDATE_RESULTS:
                self.model_updates.labels(model, result)


class _DeprecatedAliases(Collector):
    """Serves each renamed counter under its old name too (same samples, help marked DEPRECATED)."""

    def __init__(self, aliases: dict[str, Counter]) -> None:
        self.aliases = aliases  # old name (with _total) -> the renamed counter

    def describe(self) -> Iterator[Any]:
        return iter(())  # unchecked: the registry need not know these names

    def collect(self) -> Iterator[Any]:
        for old, counter in self.aliases.items():
            for family in counter.collect():
                new = family.name + "_total"
                alias = CounterMetricFamily(
                    old, f"DEPRECATED, removed in the next release: use {new}. {family.documentation}"
                )
                for sample in family.samples:
                    if sample.name == new:
                        alias.add_sample(old, sample.labels, sample.value)
                yield alias
