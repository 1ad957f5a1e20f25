"""The daemon: builds every part from the Config, owns threads and signals, talks to systemd.

The one place that wires capture, chain, publish and health together. `Daemon` composes:
- a `Supervisor` (supervisor.py): the running config, the loaded models and camera runners, reloads;
- a `Controller` (controller.py) when `mqtt.commands` is on: MQTT commands, run in the main loop;
- a `StatusReport` (status.py): readiness, status, liveness, the systemd STATUS line;
- the publisher, Home Assistant discovery, the stats topic, the operator view, the health server and
  the systemd watchdog.

Threads: `run_forever` is the main loop (main thread): it polls the signal flags (stop, reload), runs
at most one MQTT command per round and the periodic Home Assistant work. Every part named above runs
its own threads; this module only starts and stops them.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

from edged import __version__
from edged.analytics.counts import AnalyticsCollector
from edged.capture.watcher import WATCHER as CAPTURE_WATCHER
from edged.config.loader import load_config
from edged.config.problems import ConfigError
from edged.config.schema import Config, HealthConfig
from edged.daemon.commands import CommandQueue
from edged.daemon.controller import Controller
from edged.daemon.predict import PredictApi
from edged.daemon.signals import SignalFlags
from edged.daemon.sizes import LearntSizes
from edged.daemon.status import StatusReport
from edged.daemon.supervisor import Supervisor
from edged.daemon.switching import ModelSwitching
from edged.daemon.view import OperatorView
from edged.infer.base import Engine
from edged.observability import threads
from edged.observability.environment import opencv_report
from edged.observability.health.http_io import BodyRoute
from edged.observability.health.liveness import Heartbeat, Liveness
from edged.observability.health.notify import Notifier, Watchdog
from edged.observability.health.server import HealthServer, start_early
from edged.observability.metrics import Metrics
from edged.observability.rates import CameraRates, RatesCollector
from edged.observability.snapshot import render_snapshot
from edged.observability.telemetry import Telemetry
from edged.observability.telemetry_gauges import register_gauges
from edged.pipeline.delivery import Delivery
from edged.pipeline.dispatch import FrameDispatcher
from edged.publish.hass.analytics import CameraAnalytics
from edged.publish.hass.discovery import HassDiscovery, status_page_url
from edged.publish.mqtt.publisher import MqttPublisher
from edged.publish.outbox.store import Outbox
from edged.publish.routing import ResultSink
from edged.publish.stats import StatsPublisher
from edged.publish.stdout import StdoutSink

log = logging.getLogger("edged")


# A reload may load models (TensorRT engines are built on first use): the watchdog waits this long for it.
RELOAD_LIMIT_S = 900.0


def predict_route(health: HealthConfig) -> BodyRoute | None:
    """POST /predict's body limits from the config (None: the endpoint is off, no body is read)."""
    pc = health.predict
    return (
        BodyRoute(pc.max_body_bytes, pc.max_in_flight, reply_timeout_s=pc.timeout_s + 5)
        if pc.enabled
        else None
    )


class StartupError(Exception):
    """The daemon cannot start as configured (the message names the setting); exit code 78."""


class Daemon:
    def __init__(
        self,
        cfg: Config,
        config_path: Path,
        *,
        stdout: bool = False,
        signals: SignalFlags | None = None,
        engine_wrap: Callable[[str, Engine], Engine] | None = None,
        metrics: Metrics | None = None,
        health: HealthServer | None = None,
    ):
        """`health` (with the `metrics` it serves): a health server already answering "starting"
        (`edged run` starts it before this module is even imported); None: start() starts one first."""
        threads.install()  # the OS sees every thread's role name from here on (top -H, /stats)
        log.info("edged %s starting: device %s, config %s", __version__, cfg.device.name, config_path)
        self.config_path = config_path
        self.metrics = metrics or Metrics()
        # Stop/reload requests, set by signal handlers (installed early by the CLI); the main loop polls them.
        self.signals = signals or SignalFlags()
        self.rates = CameraRates()
        self.telemetry = Telemetry()
        register_gauges(self.telemetry, self.metrics.registry)
        # The parts, each given what it depends on, in this order: publishing (the outbox opens here,
        # the broker is connected by start()), the operator's view, the result sink, the supervisor,
        # the reports. Threads start in start().
        self.commands = (
            CommandQueue(cfg.topic_prefix, cfg.cameras, cfg.models)
            if cfg.mqtt.enabled and cfg.mqtt.commands
            else None
        )
        self.publisher = _publisher(cfg, self.metrics, self.commands) if cfg.mqtt.enabled else None
        self.view = OperatorView(cfg, self.metrics, self.publisher)  # thumbnails, history, recent events
        self.sink = ResultSink(
            cfg.device.name,
            self.metrics,
            events_mode=lambda cam: (
                self.cfg.cameras[cam].tracking.events if cam in self.cfg.cameras else "frames"
            ),
            stdout=StdoutSink(sys.stdout) if stdout else None,
            publisher=self.publisher,
            thumbnails=self.view.thumbnails,
            history=self.view.history,
            recent=self.view.recent,
        )
        self.supervisor = Supervisor(
            cfg,
            config_path,
            self.metrics,
            self.sink,
            FrameDispatcher(),  # hands every camera's frames to its chain (one thread)
            Delivery(),  # runs the cameras' sinks off the model servers' threads
            self.rates,
            engine_wrap=engine_wrap,  # (model name, warmed engine) -> engine: how tests inject faults
            should_stop=lambda: self.signals.stop,  # a SIGTERM during start-up stops the loading
            learnt=LearntSizes(cfg.state_dir / "source_sizes.json"),  # camera sizes of earlier runs
        )
        # Switching models' engines: SIGHUP on a changed file, MQTT update/force/rollback
        # (edged.daemon.switching).
        self.switching = ModelSwitching(self.supervisor, lambda: self.publisher)
        self.supervisor.attach(self.switching)
        pc = cfg.health.predict  # POST /predict: the cameras' model servers answer it
        self.predict = (
            PredictApi(pc, self.supervisor, cfg.device.name, lambda: self.publisher) if pc.enabled else None
        )
        self.report = StatusReport(
            self.supervisor,
            self.rates,
            self.telemetry,
            publisher=self.publisher,
            predict=self.predict.status if self.predict is not None else None,
        )
        self.metrics.registry.register(RatesCollector(self.report.cameras, lambda: list(self.cfg.cameras)))
        self.metrics.registry.register(AnalyticsCollector(self.supervisor.line_counts, self._occupancy))
        self.hass = _hass(cfg, self.publisher, self.report) if self.publisher is not None else None
        if self.hass is not None:
            self.sink.attach(self.hass)
        self.controller = (
            Controller(
                self.supervisor,
                self.publisher,
                cfg.topic_prefix,
                self.snapshot,
                self.switching,
                expiry_s=cfg.mqtt.expiry_s,  # MQTT 5: the retained states expire unless refreshed
                on_counts_reset=self.hass.touch if self.hass is not None else None,
            )
            if self.publisher is not None and self.commands is not None
            else None
        )
        self.stats_pub = (
            StatsPublisher(
                self.publisher,
                f"{cfg.topic_prefix}/stats",
                cfg.mqtt.stats_interval_s,
                self.report.status,
                self.telemetry,
            )
            if self.publisher is not None
            else None
        )
        self.health = health
        self.notifier = Notifier()
        self.watchdog: Watchdog | None = None
        # What the watchdog pings for: the daemon's machinery, never the cameras (see
        # edged.observability.health.liveness).
        self.heartbeat = Heartbeat()
        self.liveness = Liveness()

    @property
    def cfg(self) -> Config:
        """The running config: the supervisor's (a reload replaces it)."""
        return self.supervisor.cfg

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the parts' threads. Health first (alive, not ready, with the warm-up's progress), then
        MQTT, the models (each serving after its first warm shape, edged.serving.warmup) and the
        cameras; READY=1 then."""
        self._start_health()
        log.info("%s", opencv_report())
        self._start_mqtt()
        self.view.start()
        self.supervisor.start()
        if self.signals.stop:  # asked to stop while the models loaded: no READY=1, no watchdog
            return
        self.report.startup_summary(self.health.port if self.health is not None else None)
        self.notifier.ready(self.report.one_line())
        self.liveness.add("main loop", self.heartbeat.check)
        if self.publisher is not None:
            self.liveness.add("mqtt publisher", self.publisher.healthy)
        self.liveness.add("camera chains", self.report.chains_progressing)
        self.liveness.add("frame dispatcher", self.supervisor.dispatcher.alive)
        self.liveness.add("capture watcher", CAPTURE_WATCHER.healthy)  # judges every camera's stalls
        self.liveness.add("model servers", self.report.models_serving)
        self.liveness.add("model loading", self.report.models_loaded)  # only where a restart may help
        self.heartbeat.beat()
        self.watchdog = Watchdog(self.notifier, self.liveness, summary=self.report.one_line)
        self.watchdog.start()

    def _start_mqtt(self) -> None:
        """Connect in the background (never blocks), and send the stats every interval."""
        if self.publisher is not None:
            self.publisher.start()
        if self.stats_pub is not None:
            self.stats_pub.start()

    def _start_health(self) -> None:
        if self.health is None and self.cfg.health.enabled:
            h = self.cfg.health
            self.health = start_early(
                h.bind,
                h.port,
                self.metrics,
                device=self.cfg.device.name,
                version=__version__,
                predict_route=predict_route(h),
            )
        if self.health is not None:
            self.health.attach(
                status=self.report.status,
                ready=self.report.ready,
                snapshot=self.snapshot,
                history=self.view.history_view,
                thumbnail=self.view.thumbnail,
                predict=self.predict.handle if self.predict is not None else None,
            )

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
                self.notifier.ready(self.report.one_line())
        if self.controller is not None:
            if command is not None:
                self.controller.execute(command)
            self.controller.announce()
        if self.hass is not None:
            self.hass.tick()
        self.supervisor.learn_sizes()

    def shutdown(self, flush_timeout_s: float = 5.0) -> None:
        log.info("stopping: finishing in-flight frames, flushing the outbox (up to %.0f s)", flush_timeout_s)
        self.notifier.stopping()
        if self.watchdog is not None:
            self.watchdog.stop()
        self.supervisor.stop_cameras()
        self.supervisor.dispatcher.stop()
        self.supervisor.delivery.close()
        self.view.stop()  # nothing reaches the sink any more: the thumbnails queued so far get written
        if self.stats_pub is not None:
            self.stats_pub.stop()
        if self.publisher is not None:
            # Retained per-camera states say what runs now: nothing will, so they go before "offline".
            if self.hass is not None:
                self.hass.clear_states()
            if self.controller is not None:
                self.controller.clear()
            self.publisher.stop(flush_timeout_s)
            self.publisher.outbox.close()  # the publisher does not own the outbox
        if self.health is not None:
            self.health.stop()
        self.supervisor.close_models()
        log.info("stopped")

    # --- reload ------------------------------------------------------------------------------

    def reload(self) -> None:
        """Re-read the config; on error keep the running one. Restart only what changed (supervisor.py)."""
        self.notifier.reloading()
        try:
            new = load_config(self.config_path, require_cameras=True)
        except ConfigError as e:
            log.error("reload: config %s rejected, keeping the running one:\n%s", self.config_path, e)
            self.notifier.ready(self.report.one_line())
            return
        self.supervisor.reload(new)
        if self.hass is not None:
            self.hass.set_cameras(self.cfg.cameras)
            self.hass.set_analytics(_hass_analytics(self.cfg))
        if self.commands is not None:
            self.commands.set_names(self.cfg.cameras, self.cfg.models)
        if self.controller is not None:
            self.controller.reannounce()  # cameras may have come or gone: republish every enabled state
        self.notifier.ready(self.report.one_line())

    # --- what the health server and commands read -------------------------------------------------

    def snapshot(self, camera: str) -> bytes | None:
        runner = self.supervisor.cameras.get(camera)
        if runner is None:
            return None
        # The frame that has results drawn on it, else the newest raw frame; lines and zones over it.
        result = runner.last_result
        frame = result.frame if result is not None else runner.last_frame
        shapes = runner.analytics.shapes() if runner.analytics is not None else ()
        return render_snapshot(frame, result, shapes=shapes) if frame is not None else None

    def _occupancy(self) -> dict[str, dict[str, dict[str, int]]]:
        """camera -> zone -> label -> objects inside (for /metrics)."""
        return {n: r.analytics.occupancy() for n, r in list(self.supervisor.cameras.items()) if r.analytics}


def _publisher(cfg: Config, metrics: Metrics, commands: CommandQueue | None) -> MqttPublisher:
    """The MQTT publisher over its disk outbox (opened here: StartupError if it cannot be), not connected."""
    try:
        outbox = Outbox(cfg.mqtt.outbox, metrics=metrics)
    except OSError as e:  # nothing may be published without a durable outbox
        raise StartupError(f"mqtt.outbox.dir {cfg.mqtt.outbox.dir}: {e.strerror or e}") from None
    publisher = MqttPublisher(cfg.mqtt, cfg.device.name, cfg.topic_prefix, outbox, metrics)
    if commands is not None:
        publisher.on_command(commands.submit)
    return publisher


def _hass(cfg: Config, publisher: MqttPublisher, report: StatusReport) -> HassDiscovery | None:
    """Home Assistant discovery (mqtt.hass.enabled), publishing the daemon's status."""
    if not cfg.mqtt.hass.enabled:
        return None
    hass = HassDiscovery(
        publisher,
        cfg.device.name,
        cfg.topic_prefix,
        discovery_prefix=cfg.mqtt.hass.discovery_prefix,
        state_interval_s=cfg.mqtt.hass.state_interval_s,
        status=report.status,
        state_path=cfg.state_dir / "hass.json",
        thumbnails=cfg.thumbnails.enabled and cfg.thumbnails.publish,
        commands=cfg.mqtt.commands,
        configuration_url=cfg.mqtt.hass.configuration_url
        or status_page_url(cfg.health.bind, cfg.health.port, cfg.health.enabled),
        expiry_s=cfg.mqtt.expiry_s,
    )
    hass.set_cameras(cfg.cameras)
    hass.set_analytics(_hass_analytics(cfg))
    return hass


def _hass_analytics(cfg: Config) -> dict[str, CameraAnalytics]:
    """The line and zone names of each camera, for Home Assistant discovery."""
    return {
        name: CameraAnalytics(tuple(cam.analytics.lines), tuple(cam.analytics.zones))
        for name, cam in cfg.cameras.items()
        if cam.analytics.active
    }
