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
from typing import Any, Protocol

from edged.analytics.counts import LineCounts
from edged.config.schema import Config
from edged.daemon.sizes import LearntSizes
from edged.gpu.context import device_memory_used_mb
from edged.infer.base import Engine, ModelLoadError
from edged.observability.memory import process_rss_mb
from edged.observability.metrics import Metrics
from edged.observability.rates import CameraRates
from edged.pipeline.delivery import Delivery
from edged.pipeline.dispatch import FrameDispatcher
from edged.pipeline.runner import CameraRunner
from edged.serving.loading import LoadedModel, load_model
from edged.serving.warmup import WarmUpCancelled
from edged.types import FrameResult

log = logging.getLogger("edged")


class FileSwitches(Protocol):
    """What the supervisor tells the switches to other files (edged.daemon.switching.ModelSwitching)."""

    def loaded(self, name: str) -> None: ...

    def reload(self, old: Config, new: Config) -> set[str]: ...


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
    their change without a restart (a new file, shadow-checked, switched to: edged.daemon.switching)."""
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


# What an operator reads about a model that did not load (log, /readyz), by whether a restart may help.
RESTART_HELPS = (
    "The cause is the machine's state, so a restart may help: the watchdog stops, and systemd restarts edged"
)
RESTART_WONT_HELP = (
    "A restart will not help: fix models.{name} (replace the file, or correct its settings), then "
    "`systemctl reload edged` (SIGHUP) loads it; its cameras start then"
)


def _memory_at_load(on_gpu: bool, rss0: float | None, dev0: float | None) -> dict[str, float | None]:
    """What the process's RSS (and the GPU's memory in use) grew by while one model loaded."""
    rss1 = process_rss_mb()
    out: dict[str, float | None] = {
        "host_mb_at_load": round(rss1 - rss0, 1) if rss0 is not None and rss1 is not None else None
    }
    if on_gpu:
        dev1 = device_memory_used_mb()
        # The first GPU model's figure includes the CUDA context (none existed before it).
        out["device_mb_at_load"] = round(dev1 - (dev0 or 0.0), 1) if dev1 is not None else None
    return out


def failed_models(sup: Supervisor) -> tuple[bool, str]:
    """Liveness: no configured model failed to load for a cause a restart may clear."""
    for name in sorted(sup.restart_may_help & set(sup.cfg.models) - set(sup.models)):
        return (
            False,
            f"model {name} could not be loaded ({sup.model_errors.get(name, '')}); a restart may help",
        )
    return True, ""


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
        should_stop: Callable[[], bool] = lambda: False,
        learnt: LearntSizes | None = None,
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
        # A stop was asked for (SIGTERM): loading stops between two warm-up shapes, nothing more starts.
        self.should_stop = should_stop
        # Camera resolutions seen in earlier runs (declared shapes); `_sized`: cameras recorded this run.
        self.learnt = learnt
        self._sized: set[str] = set()
        self.models: dict[str, LoadedModel] = {}
        self.model_errors: dict[str, str] = {}  # why a configured model did not load (status page)
        # Of those, the ones whose cause is the machine's state (GPU memory, a CUDA error): a restart of
        # the process may load them, so liveness fails for them (the watchdog stops, systemd restarts).
        self.restart_may_help: set[str] = set()
        self.cameras: dict[str, CameraRunner] = {}
        # Models being loaded now (start-up, reload): name -> {"state", "done", "total"}, for /readyz,
        # /stats and the status page while the health server already answers.
        self.loading: dict[str, dict[str, Any]] = {}
        # What each model took when it loaded (edged.observability.memory): host RSS, device memory.
        self.model_memory: dict[str, dict[str, float | None]] = {}
        # Line crossing counts of every camera (edged.analytics): kept across camera restarts.
        self.line_counts = LineCounts()
        # Run-time enable/disable by MQTT command, per camera; never persisted (a restart follows the config).
        self.enabled_override: dict[str, bool] = {}
        self._switching: FileSwitches | None = None  # `attach`

    def attach(self, switching: FileSwitches) -> None:
        """Switches to other files (edged.daemon.switching), once, before `start`: told of every loaded model;
        on reload they say which changed models take the change live, without a restart. Not a
        constructor argument because they reach the loaded models through this supervisor (a cycle)."""
        self._switching = switching

    # --- start and stop ----------------------------------------------------------------------

    def start(self) -> None:
        """Every configured model, then every wanted camera."""
        self.init_metric_labels()
        self.load_models(set(self.cfg.models))
        for name in self.cfg.cameras:
            if self.should_stop():
                return
            self.start_camera(name)

    def stop_cameras(self) -> None:
        for m in self.models.values():  # their last frames must not wait behind warm-ups
            m.server.stop_warming()
        for runner in self.cameras.values():
            runner.stop()

    def close_models(self) -> None:
        for m in self.models.values():
            m.close()

    def load_models(self, names: set[str]) -> None:
        for name in sorted(names):
            if self.should_stop():
                log.info("stop requested: model %s and the rest are not loaded", name)
                return
            self.loading[name] = {"state": "loading", "done": 0, "total": None}
            wrap = None
            if self.engine_wrap is not None:
                wrap = lambda e, n=name: self.engine_wrap(n, e)  # type: ignore[misc]  # noqa: E731
            rss0 = process_rss_mb()
            dev0 = device_memory_used_mb()
            try:
                self.models[name] = load_model(
                    name,
                    self.cfg.models[name],
                    self.metrics,
                    source_sizes=self.source_sizes(name),
                    regions=self.regions(name),
                    wrap=wrap,
                    progress=self._warm_progress,
                    cancel=self.should_stop,
                )
                self.loading.pop(name, None)
            except WarmUpCancelled:
                self.loading.pop(name, None)
                log.info("stop requested: model %s stopped warming up", name)
                return
            except ModelLoadError as e:
                # Cameras using it cannot run; others go on. check-config catches this before deploys.
                self.loading.pop(name, None)
                self.model_errors[name] = str(e)
                if e.transient:
                    self.restart_may_help.add(name)
                    log.error("model %s: %s. %s", name, e, RESTART_HELPS)
                else:
                    self.restart_may_help.discard(name)
                    log.error("model %s: %s. %s", name, e, RESTART_WONT_HELP.format(name=name))
                continue
            self.model_errors.pop(name, None)
            self.restart_may_help.discard(name)
            self.model_memory[name] = _memory_at_load(self.models[name].lane is not None, rss0, dev0)
            if self._switching is not None:
                self._switching.loaded(name)

    def source_sizes(self, model: str) -> list[tuple[int, int]]:
        """Resolutions of the cameras whose chains use the model (its declared input sizes): configured,
        else learnt from an earlier run's frames (edged.daemon.sizes); none known: the defaults."""
        sizes = set()
        for name, c in self.cfg.cameras.items():
            if not any(s.model == model for s in c.chain):
                continue
            if c.width and c.height:
                sizes.add((c.width, c.height))
            elif self.learnt is not None and (seen := self.learnt.size_for(name, c.source)) is not None:
                sizes.add(seen)
        return sorted(sizes)

    def learn_sizes(self) -> None:
        """(main loop) Record each running camera's frame size, for the next start's declared shapes."""
        if self.learnt is None:
            return
        for name, runner in list(self.cameras.items()):
            frame = runner.last_frame
            if frame is not None and name not in self._sized:
                h, w = frame.shape[:2]
                self.learnt.observe(name, runner.config.source, int(w), int(h))
                self._sized.add(name)

    def regions(self, model: str) -> bool:
        """Whether a camera runs the model as its first stage on motion regions (declares their canvases)."""
        return any(
            c.motion.enabled and c.motion.region and c.chain and c.chain[0].model == model
            for c in self.cfg.cameras.values()
        )

    def _warm_progress(self, model: str, done: int, total: int) -> None:
        """A model server warmed one more shape (at load, or later between batches)."""
        entry = self.loading.get(model)
        if entry is not None:
            entry.update(state="warming", done=done, total=total)
        if done and (done == total or done % 8 == 0):
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
        self._sized.discard(name)  # its source may change: look at its size again
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
        live = self._switching.reload(old, new) if self._switching is not None else set()
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
        for n in plan.removed_models:
            self.model_errors.pop(n, None)
            self.restart_may_help.discard(n)
        # A model that failed to load is tried again even with the same config (its file was replaced).
        retry = {n for n in self.model_errors if n in new.models and n not in self.models}
        self.cfg = new.model_copy(update={"mqtt": old.mqtt, "health": old.health, "device": old.device})
        self.init_metric_labels()
        self.load_models(set(plan.changed_models) | retry)
        for n in sorted(plan.restart):
            if n in new.cameras:
                log.info("reload: starting camera %s", n)
                self.start_camera(n)
            else:
                self.line_counts.configure(n, [])  # a removed camera's counts go with it
        for n in sorted(set(new.cameras) - set(self.cameras) - plan.restart):
            # Cameras that waited for a model that now loaded.
            if self.wanted(n) and {s.model for s in new.cameras[n].chain} <= set(self.models):
                log.info("reload: starting camera %s (its models loaded)", n)
                self.start_camera(n)
        log.info(
            "reload: done (%d camera(s) restarted, %d model(s) reloaded)",
            len(plan.restart),
            len(plan.changed_models),
        )
        return plan
