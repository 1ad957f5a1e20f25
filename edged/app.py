"""The daemon: builds every part from the Config, owns threads and signals, talks to systemd.

The one place that wires capture, chain, publish and health together.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edged import __version__, report
from edged.chain.delivery import Delivery
from edged.chain.dispatch import FrameDispatcher
from edged.commands import CommandQueue
from edged.config import Config, ConfigError, load_config
from edged.control import CommandControl
from edged.environment import opencv_report
from edged.hass import HassDiscovery, status_page_url
from edged.health.liveness import Heartbeat, Liveness
from edged.health.notify import Notifier, Watchdog
from edged.health.server import HealthServer
from edged.infer import ModelLoadError
from edged.infer.base import Engine
from edged.metrics import Metrics
from edged.operator_view import OperatorView
from edged.publish.mqtt import MqttPublisher
from edged.publish.outbox import Outbox
from edged.publish.stdout import StdoutSink
from edged.rates import CameraRates, RatesCollector
from edged.runtime import CameraRunner, LoadedModel, load_model
from edged.signals import SignalFlags
from edged.sinks import ResultSink
from edged.snapshot import render_snapshot
from edged.telemetry import StatsPublisher, Telemetry, register_gauges

log = logging.getLogger("edged")


# A reload may load models (TensorRT engines are built on first use): the watchdog waits this long for it.
RELOAD_LIMIT_S = 900.0


class StartupError(Exception):
    """The daemon cannot start as configured (the message names the setting); exit code 78."""


class Daemon(CommandControl):
    def __init__(
        self,
        cfg: Config,
        config_path: Path,
        *,
        stdout: bool = False,
        signals: SignalFlags | None = None,
        engine_wrap: Callable[[str, Engine], Engine] | None = None,
    ):
        self.cfg = cfg
        # (model name, warmed engine) -> the engine its server calls; how tests inject engine faults.
        self.engine_wrap = engine_wrap
        self.config_path = config_path
        self.metrics = Metrics()
        self.models: dict[str, LoadedModel] = {}
        self._model_errors: dict[str, str] = {}  # why a configured model did not load (status page)
        self.cameras: dict[str, CameraRunner] = {}
        self.dispatcher = FrameDispatcher()  # hands every camera's frames to its chain (one thread)
        self.delivery = Delivery()  # runs the cameras' sinks off the model servers' threads
        self.sink = ResultSink(
            cfg.device.name,
            self.metrics,
            events_mode=lambda cam: (
                self.cfg.cameras[cam].tracking.events if cam in self.cfg.cameras else "frames"
            ),
            stdout=StdoutSink(sys.stdout) if stdout else None,
        )
        self.view = OperatorView(cfg, self.metrics, self.sink)  # thumbnails, history, recent events
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
        # What the watchdog pings for: the daemon's machinery, never the cameras (see edged.health.liveness).
        self.heartbeat = Heartbeat()
        self.liveness = Liveness()
        # Stop/reload requests, set by signal handlers (installed early by the CLI); the main loop polls them.
        self.signals = signals or SignalFlags()
        self.commands: CommandQueue | None = None
        # Run-time enable/disable by MQTT command, per camera; never persisted (a restart follows the config).
        self._enabled_override: dict[str, bool] = {}
        self._announced = False  # the retained <camera>/enabled states went out on this connection
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
                    thumbnails=self.cfg.thumbnails.enabled and self.cfg.thumbnails.publish,
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
        self.view.start(self.publisher)
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
                history=self.view.snapshot,
                thumbnail=self.view.thumbnail,
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
        report.startup_summary(self)
        self.notifier.ready(self.one_line_status())
        self.liveness.add("main loop", self.heartbeat.check)
        if self.publisher is not None:
            self.liveness.add("mqtt publisher", self.publisher.healthy)
        self.liveness.add("camera chains", self.chains_progressing)
        self.liveness.add("frame dispatcher", self.dispatcher.alive)
        self.liveness.add("model servers", self.models_serving)
        self.heartbeat.beat()
        self.watchdog = Watchdog(self.notifier, self.liveness, summary=self.one_line_status)
        self.watchdog.start()

    def run_forever(self) -> int:
        """Serve until SIGTERM/SIGINT; SIGHUP reloads the config (one during start-up: after it).
        Returns the exit code."""
        self.signals.install()
        if not self.signals.stop:  # stopped before it started: nothing to start
            self.start()
        while not self.signals.stop:
            self.tick(0.2)
        self.shutdown()
        return 0

    def tick(self, wait_s: float) -> None:
        """One round of the main loop: a pending reload, at most one command, the retained states."""
        self.heartbeat.beat()
        command = self.commands.get(wait_s) if self.commands is not None else None
        if command is None and self.commands is None:
            time.sleep(wait_s)
        if self.signals.stop:
            return
        if self.signals.take_reload():
            try:
                with self.heartbeat.busy("reload", RELOAD_LIMIT_S):
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
        for runner in self.cameras.values():
            runner.stop()
        self.dispatcher.stop()
        self.delivery.close()
        self.view.stop()
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
        for name in sorted(names):
            wrap = None
            if self.engine_wrap is not None:
                wrap = lambda e, n=name: self.engine_wrap(n, e)  # type: ignore[misc]  # noqa: E731
            try:
                self.models[name] = load_model(
                    name,
                    self.cfg.models[name],
                    self.metrics,
                    source_sizes=self._source_sizes(name),
                    regions=self._regions(name),
                    wrap=wrap,
                    progress=self._warm_progress,
                )
            except ModelLoadError as e:
                # Cameras using it cannot run; others go on. check-config catches this before deploys.
                log.error("model %s: %s", name, e)
                self._model_errors[name] = str(e)
                continue
            self._model_errors.pop(name, None)

    def _source_sizes(self, model: str) -> list[tuple[int, int]]:
        """Configured resolutions of the cameras whose chains use the model (its declared input sizes)."""
        return sorted(
            {
                (c.width, c.height)
                for c in self.cfg.cameras.values()
                if c.width and c.height and any(s.model == model for s in c.chain)
            }
        )

    def _regions(self, model: str) -> bool:
        """Whether a camera runs the model as its first stage on motion regions (declares their canvases)."""
        return any(
            c.motion.enabled and c.motion.region and c.chain and c.chain[0].model == model
            for c in self.cfg.cameras.values()
        )

    @staticmethod
    def _warm_progress(model: str, done: int, total: int) -> None:
        if done == total or done % 8 == 0:
            log.info("model %s: warmed %d/%d input shapes", model, done, total)

    def wanted(self, name: str) -> bool:
        """Whether the camera should run: its run-time override (MQTT command), else the config."""
        return self._enabled_override.get(name, self.cfg.cameras[name].enabled)

    def _start_camera(self, name: str) -> None:
        cam = self.cfg.cameras[name]
        if not self.wanted(name):
            how = "by an MQTT command" if name in self._enabled_override else "in the config"
            log.info("camera %s: disabled %s", name, how)
            return
        missing = sorted({s.model for s in cam.chain} - set(self.models))
        if missing:
            log.error("camera %s: not started, model(s) failed to load: %s", name, ", ".join(missing))
            return
        runner = CameraRunner(
            name,
            cam,
            self.models,
            self.sink,
            self.metrics,
            self.dispatcher,
            self.delivery,
            self.config_path.parent,
        )
        runner.start()
        self.rates.reset(name)
        self.cameras[name] = runner

    # --- reload ------------------------------------------------------------------------------

    def reload(self) -> None:
        """Re-read the config; on error keep the running one. Restart only what changed."""
        self.notifier.reloading()
        try:
            new = load_config(self.config_path, require_cameras=True)
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

    def models_serving(self) -> tuple[bool, str]:
        return report.models_serving(self)

    def chains_progressing(self) -> tuple[bool, str]:
        return report.chains_progressing(self)

    def ready(self) -> tuple[bool, dict[str, Any]]:
        return report.ready(self)

    def status(self) -> dict[str, Any]:
        return report.status(self)

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
        return report.one_line(self)
