"""What the daemon reports about itself: readiness (/readyz), status (/stats, the status page, the MQTT
stats topic), liveness checks for the watchdog, the one-line systemd STATUS and the startup summary.

`StatusReport` reads the daemon's parts (the supervisor's models and cameras, the publisher, the
telemetry, the cameras' rates) and never drives them. Its methods are called from the health server's,
the watchdog's, the stats publisher's and the main loop's threads; they copy the supervisor's dicts
before iterating.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from edged import __version__
from edged.daemon.supervisor import RESTART_HELPS, RESTART_WONT_HELP, Supervisor, failed_models
from edged.gpu.context import device_memory_used_mb
from edged.observability import threads
from edged.observability.memory import peak_rss_mb, process_rss_mb
from edged.observability.rates import CameraRates
from edged.observability.telemetry import Telemetry
from edged.publish.mqtt.publisher import MqttPublisher

log = logging.getLogger("edged")


class StatusReport:
    def __init__(
        self,
        supervisor: Supervisor,
        rates: CameraRates,
        telemetry: Telemetry,
        *,
        publisher: MqttPublisher | None = None,
        predict: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        """`publisher`: None without MQTT; `predict`: POST /predict's counters, None while it is off."""
        self.supervisor = supervisor
        self.rates = rates
        self.telemetry = telemetry
        self.publisher = publisher
        self.predict = predict
        self.started = time.time()

    def cameras(self) -> dict[str, dict[str, Any]]:
        """Every configured camera: a running one's status with source_fps, processed_fps and drop_ratio
        (edged.observability.rates); one that does not run stays listed, as `disabled` (by the config or
        an MQTT command) or `not_started` (a model of its chain did not load), so it can be watched."""
        running = dict(self.supervisor.cameras)
        out = {n: self.rates.with_rates(n, r.status()) for n, r in running.items()}
        for name in list(self.supervisor.cfg.cameras):
            if name not in out:
                out[name] = self._not_running(name)
        return out

    def _not_running(self, name: str) -> dict[str, Any]:
        wanted = self.supervisor.wanted(name)
        out: dict[str, Any] = {
            "state": "not_started" if wanted else "disabled",
            "enabled": wanted,
            "source_fps": 0.0,
            "processed_fps": 0.0,
            "drop_ratio": 0.0,
        }
        if not wanted:
            out["disabled_by"] = "command" if name in self.supervisor.enabled_override else "config"
        else:
            cam = self.supervisor.cfg.cameras[name]
            missing = sorted({s.model for s in cam.chain} - set(self.supervisor.models))
            out["source_error"] = f"model(s) not loaded: {', '.join(missing)}" if missing else "not started"
        return out

    def models_loaded(self) -> tuple[bool, str]:
        """Liveness: no model failed to load for a cause a restart may clear (GPU memory, CUDA)."""
        return failed_models(self.supervisor)

    def models_serving(self) -> tuple[bool, str]:
        """Liveness: every model server's threads run."""
        for m in list(self.supervisor.models.values()):
            ok, why = m.server.healthy()
            if not ok:
                return False, why
        return True, ""

    def chains_progressing(self) -> tuple[bool, str]:
        """Liveness: no chain is stuck on a frame (a wedged model). A camera without frames is not a
        stall here: its capture reopens it and /readyz names it."""
        now = time.monotonic()
        for name, runner in list(self.supervisor.cameras.items()):
            stall_s = max(runner.config.frame_timeout_s * 2, 10.0)
            p, frame = runner.chain, runner.last_frame
            if p is None or p.in_flight == 0:
                continue
            # Stuck since its last result, or since the frame it waits to hand in was taken: the last
            # result may be old only because the camera had no frames for a while (then it is not stuck).
            since = max(p.last_progress, frame.t_mono_ns / 1e9 if frame is not None else 0.0)
            if now - since > stall_s:
                return False, f"camera {name}: chain made no progress for {now - since:.0f} s"
        return True, ""

    def ready(self) -> tuple[bool, dict[str, Any]]:
        cams = {}
        reasons = []
        ok = True
        for name in self.supervisor.cfg.cameras:
            cam = self.supervisor.cfg.cameras[name]
            if not self.supervisor.wanted(name):  # off on purpose: listed, and not a reason to be unready
                how = "command" if name in self.supervisor.enabled_override else "config"
                cams[name] = {"ok": True, "state": "disabled", "disabled_by": how}
                continue
            runner = self.supervisor.cameras.get(name)
            age = (
                time.monotonic() - runner.capture.last_frame_mono
                if runner and runner.capture.last_frame_mono
                else None
            )
            cam_ok = runner is not None and (
                runner.capture.state == "ended" or (age is not None and age <= cam.frame_timeout_s)
            )
            cams[name] = {"ok": cam_ok, "state": runner.capture.state if runner else "not started"}
            if not cam_ok:
                late = f"no frame for {age:.1f} s" if age is not None else "no frame yet"
                error = runner.capture.last_error if runner else "not started"
                reasons.append(f"camera {name}: {late}" + (f" ({error})" if error else ""))
            ok &= cam_ok
        models = {n: n in self.supervisor.models for n in self.supervisor.cfg.models}
        ok &= all(models.values())
        broker = self.publisher.state if self.publisher else "disabled"
        loading = dict(self.supervisor.loading)
        for n, loaded in models.items():
            if loaded:
                continue
            why = self.supervisor.model_errors.get(n)
            if n in loading:
                reasons.append(f"model {n}: {_loading_text(loading[n])}")
                continue
            if why is None:
                reasons.append(f"model {n}: not loaded")
                continue
            hint = (
                RESTART_HELPS if n in self.supervisor.restart_may_help else RESTART_WONT_HELP.format(name=n)
            )
            reasons.append(f"model {n}: not loaded: {why}. {hint}")
        body = {"ready": ok, "reasons": reasons, "cameras": cams, "models": models, "broker": broker}
        # Shapes still warmed between batches (ready meanwhile: batches use the warm ones).
        body["warming"] = {
            n: m.server.warmer.plan.progress()
            for n, m in list(self.supervisor.models.items())
            if m.server.warmer.warming
        }
        if self.publisher is not None:
            pub_ok, why = self.publisher.ready()
            body["ready"] = ok = ok and pub_ok
            body["publisher"] = {"ok": pub_ok, "reason": why}
            if not pub_ok:
                reasons.append(f"publisher: {why}")
        return ok, body

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": __version__,
            "device": self.supervisor.cfg.device.name,
            "uptime_s": round(time.time() - self.started, 1),
            "cameras": self.cameras(),
            "models": {
                n: {
                    "kind": m.config.kind,
                    "backend": m.engine.info.backend,
                    "device": m.engine.info.device,
                    "preprocess": m.preprocessor.name,
                    **m.server.status(),
                    "memory": self.supervisor.model_memory.get(n),
                }
                for n, m in list(self.supervisor.models.items())
            },
        }
        for n, entry in dict(self.supervisor.loading).items():
            if n in self.supervisor.cfg.models and n not in self.supervisor.models:
                out["models"][n] = {
                    "kind": self.supervisor.cfg.models[n].kind,
                    "state": "loading",
                    "detail": _loading_text(entry),
                    "warm": {"done": entry["done"], "total": entry["total"], "finished": False},
                }
        if self.supervisor.loading:
            out["state"] = "starting"
        for n, why in list(self.supervisor.model_errors.items()):
            if n in self.supervisor.cfg.models and n not in self.supervisor.models:
                out["models"][n] = {
                    "kind": self.supervisor.cfg.models[n].kind,
                    "state": "failed",
                    "error": why,
                    "restart_may_help": n in self.supervisor.restart_may_help,
                }
        if self.publisher is not None:
            out["mqtt"] = {
                "state": self.publisher.state,
                "last_error": self.publisher.last_error,
                "broker": f"{self.supervisor.cfg.mqtt.host}:{self.supervisor.cfg.mqtt.port}",
                **self.publisher.outbox.status(),  # outbox_events, outbox_bytes, ... (Outbox.status)
            }
            out["mqtt"]["healthy"], out["mqtt"]["reason"] = self.publisher.healthy()
        if self.predict is not None:
            out["predict"] = self.predict()
        out["process"] = process_memory()
        out["telemetry"] = self.telemetry.readings()
        out["threads"] = threads.table()
        return out

    def one_line(self) -> str:
        parts = [
            f"{n}:{c['state']}:{c['processed_fps']:.1f}/{c['source_fps']:.1f}fps"  # processed/delivered
            if n in self.supervisor.cameras
            else f"{n}:{c['state']}"
            for n, c in self.cameras().items()
        ]
        broker = self.publisher.state if self.publisher else "mqtt off"
        return f"{len(self.supervisor.cameras)} camera(s) {' '.join(parts)}; broker {broker}"

    def startup_summary(self, health_port: int | None) -> None:
        lines = [f"device {self.supervisor.cfg.device.name}"]
        for n, m in self.supervisor.models.items():
            mem = self.supervisor.model_memory.get(n) or {}
            took = ", ".join(
                f"{label} {v:+.0f} MB"
                for label, v in (
                    ("host", mem.get("host_mb_at_load")),
                    ("device", mem.get("device_mb_at_load")),
                )
                if v is not None
            )
            lines.append(
                f"model {n}: {m.config.kind} on {m.engine.info.backend}/{m.engine.info.device}, "
                f"preprocess {m.preprocessor.name}, {m.config.path}" + (f"; at load {took}" if took else "")
            )
        proc = process_memory()
        if proc["rss_mb"] is not None:
            dev = f", GPU memory in use {proc['device_used_mb']:.0f} MB" if proc["device_used_mb"] else ""
            lines.append(f"memory: {proc['rss_mb']:.0f} MB resident (VmRSS){dev}")
        for n, cam in self.supervisor.cfg.cameras.items():
            chain = " -> ".join(s.stage_name for s in cam.chain) or "(no models)"
            state = (
                "running"
                if n in self.supervisor.cameras
                else ("disabled" if not cam.enabled else "NOT started")
            )
            lines.append(f"camera {n}: {cam.source} @ {cam.fps:g} fps: {chain} [{state}]")
        if self.publisher is not None:
            lines.append(
                f"mqtt {self.supervisor.cfg.mqtt.host}:{self.supervisor.cfg.mqtt.port} topics {self.supervisor.cfg.topic_prefix}/<camera>/detections"
            )
        if health_port is not None:
            lines.append(
                f"health http://{self.supervisor.cfg.health.bind}:{health_port}/ (/healthz /readyz /metrics /stats)"
            )
        log.info("startup summary:\n  %s", "\n  ".join(lines))


def _loading_text(entry: dict[str, Any]) -> str:
    """ "warming 0/27 shapes" / "opening its engine", for a model being loaded."""
    if entry.get("state") == "warming" and entry.get("total"):
        return f"warming {entry['done']}/{entry['total']} shapes"
    return "loading (opening its engine)"


def process_memory() -> dict[str, float | None]:
    """The process's resident memory now and at its peak, and the GPU's memory in use (all processes)."""
    rss, peak, dev = process_rss_mb(), peak_rss_mb(), device_memory_used_mb()
    return {
        "rss_mb": round(rss, 1) if rss is not None else None,
        "peak_rss_mb": round(peak, 1) if peak is not None else None,
        "device_used_mb": round(dev, 1) if dev is not None else None,
    }
