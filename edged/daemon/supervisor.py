"""The running parts built from the config: the loaded models and the camera runners, and reloads.

`Supervisor` owns the running config, the loaded models (each behind its model server) and the camera
runners. It starts and stops them, knows whether a camera is wanted (the config, or a run-time override
from an MQTT command; overrides are never persisted, a restart follows the config) and applies a
reload: `plan_reload(old, new)` says what changed (a pure function), `reload(new)` restarts only that.

Threads: every method runs on the daemon's main thread (start-up, SIGHUP reloads, MQTT commands: the
main loop runs them one at a time). The health server's and the watchdog's threads only read `models`,
`cameras` and `cfg` (edged/daemon/status.py copies the dicts before iterating); entries are added and
removed one at a time, so a reader sees either the old or the new runner of a camera.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edged.analytics import LineCounts
from edged.config import Config
from edged.infer import ModelLoadError
from edged.infer.base import Engine
from edged.observability.metrics import Metrics
from edged.observability.rates import CameraRates
from edged.pipeline.delivery import Delivery
from edged.pipeline.dispatch import FrameDispatcher
from edged.pipeline.runner import CameraRunner
from edged.serving.loading import LoadedModel, load_model
from edged.types import FrameResult

log = logging.getLogger("edged")


@dataclass(frozen=True)
class ReloadPlan:
    """What a new config changes in the running one."""

    changed_models: frozenset[str]  # new, or configured differently: (re)loaded
    removed_models: frozenset[str]  # closed
    restart: frozenset[str]  # cameras stopped, then started again if still configured
    needs_restart: bool  # device/mqtt/health changed: only a process restart applies those


def plan_reload(old: Config, new: Config, live: frozenset[str] = frozenset()) -> ReloadPlan:
    """Models that are new or changed, models that went, and the cameras to restart: those whose config
    changed, that came or went, or whose chain uses a changed model. `live`: changed models that take
    their change without a restart (a new file, shadow-checked: edged.daemon.updates)."""
    changed = frozenset(
        n for n in new.models if (n not in old.models or new.models[n] != old.models[n]) and n not in live
    )
    restart = frozenset(
        n
        for n in set(old.cameras) | set(new.cameras)
        if old.cameras.get(n) != new.cameras.get(n)
        or (n in new.cameras and {s.model for s in new.cameras[n].chain} & changed)
    )
    return ReloadPlan(
        changed_models=changed,
        removed_models=frozenset(set(old.models) - set(new.models)),
        restart=restart,
        needs_restart=new.mqtt != old.mqtt or new.health != old.health or new.device != old.device,
    )


class Supervisor:
    def __init__(
        self,
        cfg: Config,
        config_path: Path,
        metrics: Metrics,
        sink: Callable[[FrameResult], None],
        dispatcher: FrameDispatcher,
        delivery: Delivery,
        rates: CameraRates,
        *,
        engine_wrap: Callable[[str, Engine], Engine] | None = None,
    ) -> None:
        self.cfg = cfg
        self.config_path = config_path
        self.metrics = metrics
        self.sink = sink
        self.dispatcher = dispatcher  # hands every camera's frames to its chain (one thread)
        self.delivery = delivery  # runs the cameras' sinks off the model servers' threads
        self.rates = rates
        # (model name, warmed engine) -> the engine its server calls; how tests inject engine faults.
        self.engine_wrap = engine_wrap
        self.models: dict[str, LoadedModel] = {}
        self.model_errors: dict[str, str] = {}  # why a configured model did not load (status page)
        self.cameras: dict[str, CameraRunner] = {}
        # Line crossing counts of every camera (edged.analytics): kept across camera restarts.
        self.line_counts = LineCounts()
        # Run-time enable/disable by MQTT command, per camera; never persisted (a restart follows the config).
        self.enabled_override: dict[str, bool] = {}
        # Live model updates (edged.daemon.updates): told of every loaded model; on reload they say
        # which changed models take the change live, without a restart.
        self.on_model_loaded: Callable[[str], None] | None = None
        self.live_changes: Callable[[Config, Config], set[str]] | None = None

    # --- start and stop ----------------------------------------------------------------------

    def start(self) -> None:
        """Every configured model, then every wanted camera."""
        self.init_metric_labels()
        self.load_models(set(self.cfg.models))
        for name in self.cfg.cameras:
            self.start_camera(name)

    def stop_cameras(self) -> None:
        for runner in self.cameras.values():
            runner.stop()

    def close_models(self) -> None:
        for m in self.models.values():
            m.close()

    def load_models(self, names: set[str]) -> None:
        for name in sorted(names):
            wrap = None
            if self.engine_wrap is not None:
                wrap = lambda e, n=name: self.engine_wrap(n, e)  # type: ignore[misc]  # noqa: E731
            try:
                self.models[name] = load_model(
                    name,
                    self.cfg.models[name],
                    self.metrics,
                    source_sizes=self.source_sizes(name),
                    regions=self.regions(name),
                    wrap=wrap,
                    progress=self._warm_progress,
                )
            except ModelLoadError as e:
                # Cameras using it cannot run; others go on. check-config catches this before deploys.
                log.error("model %s: %s", name, e)
                self.model_errors[name] = str(e)
                continue
            self.model_errors.pop(name, None)
            if self.on_model_loaded is not None:
                self.on_model_loaded(name)

    def source_sizes(self, model: str) -> list[tuple[int, int]]:
        """Configured resolutions of the cameras whose chains use the model (its declared input sizes)."""
        return sorted(
            {
                (c.width, c.height)
                for c in self.cfg.cameras.values()
                if c.width and c.height and any(s.model == model for s in c.chain)
            }
        )

    def regions(self, model: str) -> bool:
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
        return self.enabled_override.get(name, self.cfg.cameras[name].enabled)

    def start_camera(self, name: str) -> None:
        cam = self.cfg.cameras[name]
        if not self.wanted(name):
            how = "by an MQTT command" if name in self.enabled_override else "in the config"
            log.info("camera %s: disabled %s", name, how, extra={"camera": name})
            return
        missing = sorted({s.model for s in cam.chain} - set(self.models))
        if missing:
            log.error(
                "camera %s: not started, model(s) failed to load: %s",
                name,
                ", ".join(missing),
                extra={"camera": name},
            )
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
            line_counts=self.line_counts,
        )
        runner.start()
        self.rates.reset(name)
        self.cameras[name] = runner

    def stop_camera(self, name: str) -> None:
        runner = self.cameras.pop(name, None)
        if runner is not None:
            runner.stop()

    def init_metric_labels(self) -> None:
        stages = {n: [s.stage_name for s in c.chain] for n, c in self.cfg.cameras.items()}
        self.metrics.init_labels(stages, self.cfg.models)

    # --- reload ------------------------------------------------------------------------------

    def reload(self, new: Config) -> ReloadPlan:
        """Run `new` instead of the running config, restarting only what changed. Device, MQTT and health
        settings stay as they are (they need a process restart)."""
        old = self.cfg
        live = self.live_changes(old, new) if self.live_changes is not None else set()
        plan = plan_reload(old, new, frozenset(live))
        if plan.needs_restart:
            log.warning(
                "reload: device/mqtt/health changes take effect after a restart (systemctl restart edged)"
            )
        for n in sorted(plan.restart):
            # An edited camera follows its new config, not an earlier run-time command.
            self.enabled_override.pop(n, None)
            if n in self.cameras:
                log.info("reload: stopping camera %s", n)
                self.stop_camera(n)
        for n in plan.changed_models | plan.removed_models:
            old_model = self.models.pop(n, None)
            if old_model is not None:
                old_model.close()
        self.cfg = new.model_copy(update={"mqtt": old.mqtt, "health": old.health, "device": old.device})
        self.init_metric_labels()
        self.load_models(set(plan.changed_models))
        for n in sorted(plan.restart):
            if n in new.cameras:
                log.info("reload: starting camera %s", n)
                self.start_camera(n)
            else:
                self.line_counts.configure(n, [])  # a removed camera's counts go with it
        log.info(
            "reload: done (%d camera(s) restarted, %d model(s) reloaded)",
            len(plan.restart),
            len(plan.changed_models),
        )
        return plan
