"""The daemon: builds every part from the Config, owns threads and signals, talks to systemd.

The one place that wires capture, chain, publish and health together.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from edged import __version__
from edged.commands import CommandQueue
from edged.config import Config, ConfigError, load_config
from edged.control import CommandControl
from edged.environment import opencv_report
from edged.faults import HangingEngine, hang_request
from edged.hass import HassDiscovery, status_page_url
from edged.health.notify import Notifier, Watchdog
from edged.health.server import HealthServer
from edged.infer import ModelLoadError
from edged.metrics import Metrics
from edged.publish.mqtt import MqttPublisher
from edged.publish.outbox import Outbox
from edged.publish.stdout import StdoutSink
from edged.rates import CameraRates, RatesCollector
from edged.runtime import CameraRunner, LoadedModel, load_model
from edged.sinks import ResultSink
from edged.snapshot import render_snapshot
from edged.telemetry import StatsPublisher, Telemetry, register_gauges

log = logging.getLogger("edged")


class StartupError(Exception):
    """The daemon cannot start as configured (the message names the setting); exit code 78."""


class Daemon(CommandControl):
    def __init__(self, cfg: Config, config_path: Path, *, stdout: bool = False):
        self.cfg = cfg
        self.config_path = config_path
        self.metrics = Metrics()
        self.models: dict[str, LoadedModel] = {}
        self.cameras: dict[str, CameraRunner] = {}
        self.sink = ResultSink(
            cfg.device.name,
            self.metrics,
            events_mode=lambda cam: (
                self.cfg.cameras[cam].tracking.events if cam in self.cfg.cameras else "frames"
            ),
            stdout=StdoutSink(sys.stdout) if stdout else None,
        )
        self.telemetry = Telemetry()
        register_gauges(self.telemetry, self.metrics.registry)
        self.rates = CameraRates()
        self.metrics.registry.register(RatesCollector(self.camera_status, lambda: list(self.cfg.cameras)))
        self.hass: HassDiscovery | None = None
        self.stats_pub: StatsPublisher | None = None
        self.publisher: MqttPublisher | None = None
        self.health: HealthServer | None = None
        self.notifier = Notifier()
        self.watchdog: Watchdog | None = None
        # Set by signal handlers: plain flags, because taking a lock (Event.set) inside a handler can
        # deadlock against the main thread holding that same lock. The main loop polls them.
        self._stop_requested = False
        self._reload_requested = False
        self.commands: CommandQueue | None = None
        # Run-time enable/disable by MQTT command, per camera; never persisted (a restart follows the config).
        self._enabled_override: dict[str, bool] = {}
        self._announced = False  # the retained <camera>/enabled states went out on this connection
        self._camera_started: dict[str, float] = {}  # monotonic start of each runner (watchdog grace)
        self._release_faults = threading.Event()  # releases fault-injection hangs at shutdown
        self.started = time.time()

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        log.info(
            "edged %s starting: device %s, config %s", __version__, self.cfg.device.name, self.config_path
        )
        log.info("%s", opencv_report())
        self._init_metric_labels()
        if self.cfg.mqtt.enabled:
            try:
                outbox = Outbox(self.cfg.mqtt.outbox, metrics=self.metrics)
            except OSError as e:  # nothing may be published without a durable outbox
                raise StartupError(f"mqtt.outbox.dir {self.cfg.mqtt.outbox.dir}: {e.strerror or e}") from None
            self.publisher = MqttPublisher(
                self.cfg.mqtt, self.cfg.device.name, self.cfg.topic_prefix, outbox, self.metrics
            )
            if self.cfg.mqtt.commands:
                self.commands = CommandQueue(self.cfg.topic_prefix, self.cfg.cameras)
                self.publisher.on_command(self.commands.submit)
            self.publisher.start()
            self.sink.publisher = self.publisher
            if self.cfg.mqtt.hass.enabled:
                self.hass = HassDiscovery(
                    self.publisher,
                    self.cfg.mqtt.hass,
                    self.cfg.device.name,
                    self.cfg.topic_prefix,
                    status=self.status,
                    state_path=self.cfg.state_dir / "hass.json",
                    commands=self.cfg.mqtt.commands,
                    configuration_url=self.cfg.mqtt.hass.configuration_url
                    or status_page_url(self.cfg.health.bind, self.cfg.health.port, self.cfg.health.enabled),
                )
                self.hass.set_cameras(self.cfg.cameras)
                self.sink.hass = self.hass
            self.stats_pub = StatsPublisher(
                self.publisher,
                f"{self.cfg.topic_prefix}/stats",
                self.cfg.mqtt.stats_interval_s,
                self.status,
                self.telemetry,
            )
            self.stats_pub.start()
        self._load_models(set(self.cfg.models))
        for name in self.cfg.cameras:
            self._start_camera(name)
        if self.cfg.health.enabled:
            self.health = HealthServer(
                self.cfg.health.bind,
                self.cfg.health.port,
                self.metrics,
                status=self.status,
                ready=self.ready,
                snapshot=self.snapshot,
            )
            try:
                self.health.start()
            except OSError as e:  # the pipeline matters more than the local endpoint: go on without it
                log.error(
                    "health server not started: %s:%d: %s (another edged running? set health.port)",
                    self.cfg.health.bind,
                    self.cfg.health.port,
                    e.strerror or e,
                )
                self.health = None
        self._summary()
        self.notifier.ready(self.one_line_status())
        self.watchdog = Watchdog(self.notifier, self.progressing, summary=self.one_line_status)
        self.watchdog.start()

    def run_forever(self) -> int:
        """Serve until SIGTERM/SIGINT; SIGHUP reloads the config. Returns the exit code."""
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)
        signal.signal(signal.SIGHUP, self._on_reload_signal)
        self.start()
        while not self._stop_requested:
            self.tick(0.2)
        self.shutdown()
        return 0

    def _on_stop_signal(self, signum: int, frame: object) -> None:
        self._stop_requested = True

    def _on_reload_signal(self, signum: int, frame: object) -> None:
        self._reload_requested = True

    def tick(self, wait_s: float) -> None:
        """One round of the main loop: a pending reload, at most one command, the retained states."""
        command = self.commands.get(wait_s) if self.commands is not None else None
        if command is None and self.commands is None:
            time.sleep(wait_s)
        if self._stop_requested:
            return
        if self._reload_requested:
            self._reload_requested = False
            try:
                self.reload()
            except Exception:  # a bug in reload must not end the daemon that still runs the old pipeline
                log.exception("reload failed; cameras that were not restarted keep running")
                self.notifier.ready(self.one_line_status())
        if command is not None:
            self.execute(command)
        self._announce_enabled()
        if self.hass is not None:
            self.hass.tick()

    def shutdown(self, flush_timeout_s: float = 5.0) -> None:
        log.info("stopping: finishing in-flight frames, flushing the outbox (up to %.0f s)", flush_timeout_s)
        self.notifier.stopping()
        if self.watchdog is not None:
            self.watchdog.stop()
        self._release_faults.set()
        for runner in self.cameras.values():
            runner.stop()
        if self.stats_pub is not None:
            self.stats_pub.stop()
        if self.publisher is not None:
            self.publisher.stop(flush_timeout_s)
            self.publisher.outbox.close()  # the publisher does not own the outbox
        if self.health is not None:
            self.health.stop()
        for m in self.models.values():
            m.close()
        log.info("stopped")

    # --- parts -------------------------------------------------------------------------------

    def _load_models(self, names: set[str]) -> None:
        hang = hang_request()
        for name in sorted(names):
            try:
                self.models[name] = load_model(name, self.cfg.models[name], self.metrics)
            except ModelLoadError as e:
                # Cameras using it cannot run; others go on. check-config catches this before deploys.
                log.error("model %s: %s", name, e)
                continue
            if hang is not None and hang[0] == name:
                m = self.models[name]
                m.engine = HangingEngine(m.engine, hang[1], self._release_faults)

    def _wanted(self, name: str) -> bool:
        """Whether the camera should run: its run-time override (MQTT command), else the config."""
        return self._enabled_override.get(name, self.cfg.cameras[name].enabled)

    def _start_camera(self, name: str) -> None:
        cam = self.cfg.cameras[name]
        if not self._wanted(name):
            how = "by an MQTT command" if name in self._enabled_override else "in the config"
            log.info("camera %s: disabled %s", name, how)
            return
        missing = sorted({s.model for s in cam.chain} - set(self.models))
        if missing:
            log.error("camera %s: not started, model(s) failed to load: %s", name, ", ".join(missing))
            return
        runner = CameraRunner(name, cam, self.models, self.sink, self.metrics, self.config_path.parent)
        runner.start()
        self.rates.reset(name)
        self._camera_started[name] = time.monotonic()
        self.cameras[name] = runner

    # --- reload ------------------------------------------------------------------------------

    def reload(self) -> None:
        """Re-read the config; on error keep the running one. Restart only what changed."""
        self.notifier.reloading()
        try:
            new = load_config(self.config_path)
        except ConfigError as e:
            log.error("reload: config %s rejected, keeping the running one:\n%s", self.config_path, e)
            self.notifier.ready(self.one_line_status())
            return
        old = self.cfg
        if new.mqtt != old.mqtt or new.health != old.health or new.device != old.device:
            log.warning(
                "reload: device/mqtt/health changes take effect after a restart (systemctl restart edged)"
            )
        changed_models = {n for n in new.models if n not in old.models or new.models[n] != old.models[n]}
        removed_models = set(old.models) - set(new.models)
        restart = {
            n
            for n in set(old.cameras) | set(new.cameras)
            if old.cameras.get(n) != new.cameras.get(n)
            or (n in new.cameras and {s.model for s in new.cameras[n].chain} & changed_models)
        }
        for n in sorted(restart):
            # An edited camera follows its new config, not an earlier run-time command.
            self._enabled_override.pop(n, None)
            runner = self.cameras.pop(n, None)
            if runner is not None:
                log.info("reload: stopping camera %s", n)
                runner.stop()
        for n in changed_models | removed_models:
            old_model = self.models.pop(n, None)
            if old_model is not None:
                old_model.close()
        self.cfg = new.model_copy(update={"mqtt": old.mqtt, "health": old.health, "device": old.device})
        if self.hass is not None:
            self.hass.set_cameras(self.cfg.cameras)
        if self.commands is not None:
            self.commands.cameras = self.cfg.cameras
        self._announced = False  # cameras may have come or gone: republish every enabled state
        self._init_metric_labels()
        self._load_models(changed_models)
        for n in sorted(restart):
            if n in new.cameras:
                log.info("reload: starting camera %s", n)
                self._start_camera(n)
        log.info(
            "reload: done (%d camera(s) restarted, %d model(s) reloaded)", len(restart), len(changed_models)
        )
        self.notifier.ready(self.one_line_status())

    # --- MQTT commands (run in the main loop, never in paho's network thread) -----------------------

    # --- health ------------------------------------------------------------------------------

    def progressing(self) -> tuple[bool, str]:
        now = time.monotonic()
        for name, runner in list(self.cameras.items()):
            stall_s = max(runner.config.frame_timeout_s * 2, 10.0)
            if runner.capture.last_frame_mono is None and now - self._camera_started.get(name, 0) < stall_s:
                continue  # just (re)started: the first frame is not late yet
            ok, why = runner.progressing(stall_s)
            if not ok:
                return False, why
        return True, ""

    def ready(self) -> tuple[bool, dict[str, Any]]:
        cams = {}
        ok = True
        for name in self.cfg.cameras:
            cam = self.cfg.cameras[name]
            if not self._wanted(name):
                continue
            runner = self.cameras.get(name)
            age = (
                time.monotonic() - runner.capture.last_frame_mono
                if runner and runner.capture.last_frame_mono
                else None
            )
            cam_ok = runner is not None and (
                runner.capture.state == "ended" or (age is not None and age <= cam.frame_timeout_s)
            )
            cams[name] = {"ok": cam_ok, "state": runner.capture.state if runner else "not started"}
            ok &= cam_ok
        models = {n: n in self.models for n in self.cfg.models}
        ok &= all(models.values())
        broker = self.publisher.state if self.publisher else "disabled"
        return ok, {"ready": ok, "cameras": cams, "models": models, "broker": broker}

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "version": __version__,
            "device": self.cfg.device.name,
            "uptime_s": round(time.time() - self.started, 1),
            "cameras": self.camera_status(),
            "models": {
                n: {
                    "kind": m.config.kind,
                    "backend": m.engine.info.backend,
                    "device": m.engine.info.device,
                    "preprocess": m.preprocessor.name,
                }
                for n, m in self.models.items()
            },
        }
        if self.publisher is not None:
            ob = self.publisher.outbox
            out["mqtt"] = {
                "state": self.publisher.state,
                "last_error": self.publisher.last_error,
                "broker": f"{self.cfg.mqtt.host}:{self.cfg.mqtt.port}",
                "outbox_events": ob.depth,
                "outbox_bytes": ob.bytes,
                "outbox_oldest_age_s": round(ob.oldest_age, 1),
            }
        out["telemetry"] = self.telemetry.snapshot()
        return out

    def camera_status(self) -> dict[str, dict[str, Any]]:
        """Each running camera's status with source_fps, processed_fps and drop_ratio (edged.rates)."""
        return {n: self.rates.with_rates(n, r.status()) for n, r in list(self.cameras.items())}

    def _init_metric_labels(self) -> None:
        stages = {n: [s.stage_name for s in c.chain] for n, c in self.cfg.cameras.items()}
        self.metrics.init_labels(stages, self.cfg.models)

    def snapshot(self, camera: str) -> bytes | None:
        runner = self.cameras.get(camera)
        if runner is None:
            return None
        # The frame that has results drawn on it, else the newest raw frame.
        result = runner.last_result
        frame = result.frame if result is not None else runner.last_frame
        return render_snapshot(frame, result) if frame is not None else None

    def one_line_status(self) -> str:
        parts = [
            f"{n}:{c['state']}:{c['processed_fps']:.1f}/{c['source_fps']:.1f}fps"  # processed/delivered
            for n, c in self.camera_status().items()
        ]
        broker = self.publisher.state if self.publisher else "mqtt off"
        return f"{len(self.cameras)} camera(s) {' '.join(parts)}; broker {broker}"

    def _summary(self) -> None:
        lines = [f"device {self.cfg.device.name}"]
        for n, m in self.models.items():
            lines.append(
                f"model {n}: {m.config.kind} on {m.engine.info.backend}/{m.engine.info.device}, "
                f"preprocess {m.preprocessor.name}, {m.config.path}"
            )
        for n, cam in self.cfg.cameras.items():
            chain = " -> ".join(s.stage_name for s in cam.chain) or "(no models)"
            state = "running" if n in self.cameras else ("disabled" if not cam.enabled else "NOT started")
            lines.append(f"camera {n}: {cam.source} @ {cam.fps:g} fps: {chain} [{state}]")
        if self.publisher is not None:
            lines.append(
                f"mqtt {self.cfg.mqtt.host}:{self.cfg.mqtt.port} topics {self.cfg.topic_prefix}/<camera>/detections"
            )
        if self.health is not None:
            lines.append(
                f"health http://{self.cfg.health.bind}:{self.health.port}/ (/healthz /readyz /metrics /stats)"
            )
        log.info("startup summary:\n  %s", "\n  ".join(lines))
