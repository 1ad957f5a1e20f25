"""What the daemon reports about itself: readiness (/readyz), status (/stats, the status page, the MQTT
stats topic), liveness checks for the watchdog, the one-line systemd STATUS and the startup summary.

Functions of a running `Daemon` (edged.daemon.daemon); they only read its parts, never drive them, and are called
from the health server's, the watchdog's and the main loop's threads.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from edged import __version__

if TYPE_CHECKING:
    from edged.daemon.daemon import Daemon

log = logging.getLogger("edged")


def models_serving(d: Daemon) -> tuple[bool, str]:
    """Liveness: every model server's threads run."""
    for m in list(d.models.values()):
        ok, why = m.server.healthy()
        if not ok:
            return False, why
    return True, ""


def chains_progressing(d: Daemon) -> tuple[bool, str]:
    """Liveness: no chain is stuck on a frame (a wedged model). A camera without frames is not a
    stall here: its capture reopens it and /readyz names it."""
    now = time.monotonic()
    for name, runner in list(d.cameras.items()):
        stall_s = max(runner.config.frame_timeout_s * 2, 10.0)
        p, frame = runner.flow, runner.last_frame
        if p is None or p.in_flight == 0:
            continue
        # Stuck since its last result, or since the frame it waits to hand in was taken: the last
        # result may be old only because the camera had no frames for a while (then it is not stuck).
        since = max(p.last_progress, frame.t_mono_ns / 1e9 if frame is not None else 0.0)
        if now - since > stall_s:
            return False, f"camera {name}: chain made no progress for {now - since:.0f} s"
    return True, ""


def ready(d: Daemon) -> tuple[bool, dict[str, Any]]:
    cams = {}
    reasons = []
    ok = True
    for name in d.cfg.cameras:
        cam = d.cfg.cameras[name]
        if not d.wanted(name):
            continue
        runner = d.cameras.get(name)
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
    models = {n: n in d.models for n in d.cfg.models}
    ok &= all(models.values())
    broker = d.publisher.state if d.publisher else "disabled"
    reasons += [f"model {n}: not loaded" for n, loaded in models.items() if not loaded]
    body = {"ready": ok, "reasons": reasons, "cameras": cams, "models": models, "broker": broker}
    if d.publisher is not None:
        pub_ok, why = d.publisher.healthy()
        body["ready"] = ok = ok and pub_ok
        body["publisher"] = {"ok": pub_ok, "reason": why}
        if not pub_ok:
            reasons.append(f"publisher: {why}")
    return ok, body


def status(d: Daemon) -> dict[str, Any]:
    out: dict[str, Any] = {
        "version": __version__,
        "device": d.cfg.device.name,
        "uptime_s": round(time.time() - d.started, 1),
        "cameras": d.camera_status(),
        "models": {
            n: {
                "kind": m.config.kind,
                "backend": m.engine.info.backend,
                "device": m.engine.info.device,
                "preprocess": m.preprocessor.name,
                **m.server.status(),
            }
            for n, m in d.models.items()
        },
    }
    for n, why in d._model_errors.items():
        if n in d.cfg.models and n not in d.models:
            out["models"][n] = {"kind": d.cfg.models[n].kind, "state": "failed", "error": why}
    if d.publisher is not None:
        ob = d.publisher.outbox
        out["mqtt"] = {
            "state": d.publisher.state,
            "last_error": d.publisher.last_error,
            "broker": f"{d.cfg.mqtt.host}:{d.cfg.mqtt.port}",
            "outbox_events": ob.depth,
            "outbox_bytes": ob.bytes,
            "outbox_oldest_age_s": round(ob.oldest_age, 1),
            "outbox_held_in_memory": ob.held,
            "outbox_disk_error": ob.disk_error,
            "outbox_dropped": dict(ob.dropped),
        }
        out["mqtt"]["healthy"], out["mqtt"]["reason"] = d.publisher.healthy()
    out["telemetry"] = d.telemetry.snapshot()
    return out


def one_line(d: Daemon) -> str:
    parts = [
        f"{n}:{c['state']}:{c['processed_fps']:.1f}/{c['source_fps']:.1f}fps"  # processed/delivered
        for n, c in d.camera_status().items()
    ]
    broker = d.publisher.state if d.publisher else "mqtt off"
    return f"{len(d.cameras)} camera(s) {' '.join(parts)}; broker {broker}"


def startup_summary(d: Daemon) -> None:
    lines = [f"device {d.cfg.device.name}"]
    for n, m in d.models.items():
        lines.append(
            f"model {n}: {m.config.kind} on {m.engine.info.backend}/{m.engine.info.device}, "
            f"preprocess {m.preprocessor.name}, {m.config.path}"
        )
    for n, cam in d.cfg.cameras.items():
        chain = " -> ".join(s.stage_name for s in cam.chain) or "(no models)"
        state = "running" if n in d.cameras else ("disabled" if not cam.enabled else "NOT started")
        lines.append(f"camera {n}: {cam.source} @ {cam.fps:g} fps: {chain} [{state}]")
    if d.publisher is not None:
        lines.append(
            f"mqtt {d.cfg.mqtt.host}:{d.cfg.mqtt.port} topics {d.cfg.topic_prefix}/<camera>/detections"
        )
    if d.health is not None:
        lines.append(f"health http://{d.cfg.health.bind}:{d.health.port}/ (/healthz /readyz /metrics /stats)")
    log.info("startup summary:\n  %s", "\n  ".join(lines))
