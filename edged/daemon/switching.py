"""Switching a model's engine, the daemon's side: what triggers a switch to another file, which files
may be loaded, and how every step is reported (log, /metrics, /stats, MQTT). The engines themselves are
switched by each model's slot (edged.serving.slot), on its server's batch thread.

Triggers (both run in the daemon's main loop):
- SIGHUP: a model whose file's *content* (SHA-256, not mtime) changed since it was loaded or last
  looked at, and whose config changed at most in `path` and `update`, is switched to the new file
  through the shadow check instead of a restart. Any other change of a model's config (kind, backend, decode,
  preprocess, batching, ...) restarts it and its cameras, as before.
- MQTT `<prefix>/<model>/set/update|force|rollback` (edged.daemon.commands.ModelCommand): a file already on
  the device, inside the model's folder(s); never a download.

Reports: `edged_model_updates_total{model,result}`, one JSON reply per step on `<prefix>/<model>/update`
(QoS 1, not retained), the model's `update` block in /stats (the status page and the MQTT stats topic
show it). `SwitchCollector` adds gauges read at scrape time: the background engine build's state and
progress, and whether a candidate is loading or shadowing. Events arrive on the model servers' batch and
loader threads; publishing (paho) and counting are thread-safe.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from edged.config.inference import ModelConfig
from edged.config.schema import Config
from edged.daemon.commands import ModelCommand
from edged.infer.engine_cache import file_sha256
from edged.serving.loading import update_tolerance
from edged.serving.slot.requests import RESULTS, SwitchEvent, SwitchRequest

if TYPE_CHECKING:
    from edged.daemon.supervisor import Supervisor
    from edged.publish.mqtt.publisher import MqttPublisher

log = logging.getLogger("edged")

BUILD_STATES = ("none", "queued", "building", "ready", "failed")
UPDATE_STATES = ("idle", "loading", "shadowing")
# Config fields a switch to another file may change; a change of any other field of a model restarts it.
LIVE_FIELDS = frozenset({"path", "update"})


def only_live_changes(old: ModelConfig, new: ModelConfig) -> bool:
    return old.model_copy(update={f: getattr(new, f) for f in LIVE_FIELDS}) == new


def model_folders(name: str, m: ModelConfig) -> list[Path]:
    """Where MQTT commands may name a file for model `name`: the folder of its file + update.folders."""
    return [Path(os.path.realpath(f)) for f in (m.path.parent, *m.update.folders)]


def resolve_candidate(name: str, m: ModelConfig, text: str) -> tuple[Path | None, str]:
    """(the file a command names, "") or (None, why it is refused). Relative to the model's folder."""
    if not text:
        return None, "the payload must name the new model file (absolute, or relative to the model's folder)"
    given = Path(text)
    path = given if given.is_absolute() else m.path.parent / given
    real = Path(os.path.realpath(path))
    folders = model_folders(name, m)
    if not any(real.is_relative_to(f) for f in folders):
        return None, (
            f"{path} is outside the model folder(s) of models.{name} ({', '.join(map(str, folders))}); "
            f"add its folder to models.{name}.update.folders to allow it"
        )
    if not real.exists():
        return None, f"no such file: {path}"
    if not real.is_file():
        return None, f"{path} is not a file"
    try:
        with real.open("rb") as f:
            f.read(1)
    except OSError as e:
        return None, f"cannot read {path}: {e.strerror}"
    return real, ""


class ModelSwitching:
    """The daemon's side of switching models' engines; one per Daemon, used from its main loop. It reaches the loaded
    models through the `Supervisor` and replies through the MQTT publisher, when there is one."""

    def __init__(self, supervisor: Supervisor, publisher: Callable[[], MqttPublisher | None]) -> None:
        self.d = supervisor
        self.publisher = publisher
        self._file_sha: dict[str, str] = {}  # model -> SHA-256 of its configured file when last looked at
        supervisor.metrics.registry.register(SwitchCollector(supervisor))

    def loaded(self, name: str) -> None:
        """A model was (re)loaded: report its switches, remember its file's content."""
        slot = self.d.models[name].slot
        slot.attach(self._on_event)
        self._file_sha[name] = slot.active_sha256

    def reload(self, old: Config, new: Config) -> set[str]:
        """SIGHUP: switch models whose file changed; the changed models that need no restart."""
        live = set()
        for name, m in new.models.items():
            loaded = self.d.models.get(name)
            if name not in old.models or loaded is None or not only_live_changes(old.models[name], m):
                continue
            live.add(name)  # the supervisor runs `new` from now on: its models.<name> is the one that counts
            slot = loaded.slot
            slot.configure(m.update.shadow_frames, update_tolerance(m))
            try:
                sha = file_sha256(m.model_file)
            except OSError as e:
                slot.reject(
                    SwitchRequest("update", m.model_file, trigger="sighup"), f"cannot read: {e.strerror}"
                )
                continue
            if sha == self._file_sha.get(name):
                continue  # unchanged since last looked at (also after a refusal: `force` it)
            self._file_sha[name] = sha
            if sha == slot.active_sha256:
                continue
            log.info(
                "reload: model %s: %s changed (content); switched to after a shadow check", name, m.model_file
            )
            self._request(name, SwitchRequest("update", m.model_file, sha, "sighup"))
        return live

    def execute(self, command: ModelCommand) -> None:
        """An MQTT update/force/rollback (main loop). Never raises: the main loop must go on."""
        req = SwitchRequest(command.action, Path(command.path) if command.path else None)
        loaded = self.d.models.get(command.model)
        if loaded is None:
            why = self.d.model_errors.get(command.model)
            reason = "the model is not loaded" + (f": {why}" if why else "")
            log.warning("MQTT command %s for model %s refused: %s", command.action, command.model, reason)
            self._on_event(SwitchEvent(command.model, "rejected", "", "mqtt", reason, path=command.path))
            return
        slot = loaded.slot
        try:
            if command.action == "rollback":
                slot.request(SwitchRequest("rollback"))
                return
            # The running config's (a SIGHUP may have changed its path or update.folders since it loaded).
            path, problem = resolve_candidate(command.model, self.d.cfg.models[command.model], command.path)
            if path is None:
                slot.reject(req, problem)
                return
            self._request(command.model, SwitchRequest(command.action, path, file_sha256(path), "mqtt"))
        except Exception as e:  # e.g. the file vanished between the checks
            slot.reject(req, f"{type(e).__name__}: {e}")

    def _request(self, name: str, req: SwitchRequest) -> None:
        slot = self.d.models[name].slot
        assert req.path is not None
        problem = slot.check_file(req.path)
        if problem is not None:
            slot.reject(req, problem)
        else:
            slot.request(req)

    def _on_event(self, ev: SwitchEvent) -> None:
        """Count and publish one step (batch, loader or main thread)."""
        metrics = self.d.metrics
        if ev.result in RESULTS:
            metrics.model_updates.labels(ev.model, ev.result).inc()
        loaded = self.d.models.get(ev.model)
        if ev.result in ("switched", "forced", "rolled_back") and loaded is not None:
            info = loaded.engine.info
            metrics.engine_info.labels(ev.model).info(
                {
                    "backend": info.backend,
                    "device": info.device,
                    "preprocess": loaded.preprocessor.name,
                    "kind": loaded.config.kind,
                }
            )
        publisher = self.publisher()
        if publisher is not None:
            body = {
                "ts": round(time.time(), 3),
                "model": ev.model,
                "result": ev.result,
                "trigger": ev.trigger,
                "label": ev.label,
                "file": ev.path,
                "reason": ev.reason,
                "report": ev.report,
            }
            publisher.publish_raw(f"{self.d.cfg.topic_prefix}/{ev.model}/update", json.dumps(body), qos=1)


class SwitchCollector(Collector):
    """edged_engine_build_state / _progress and edged_model_update_state, read at scrape time; every
    configured model has every label set (0 where not current)."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.d = supervisor

    def describe(self) -> Iterator[Any]:
        return iter(())

    def collect(self) -> Iterator[Any]:
        build = GaugeMetricFamily(
            "edged_engine_build_state",
            "1 for the state of the model's background engine build (none: no build, the engine serves as loaded)",
            labels=["model", "state"],
        )
        progress = GaugeMetricFamily(
            "edged_engine_build_progress",
            "Background engine build progress of the current phase, 0..1 (1 when ready)",
            labels=["model"],
        )
        update = GaugeMetricFamily(
            "edged_model_update_state",
            "1 for the live update state of the model (loading a candidate, shadowing it, idle)",
            labels=["model", "state"],
        )
        for name in list(self.d.cfg.models):
            loaded = self.d.models.get(name)
            build_now = loaded.slot.builds.build if loaded is not None else None
            st = build_now.status() if build_now is not None else {}
            state = st.get("state", "none")
            for s in BUILD_STATES:
                build.add_metric([name, s], 1.0 if s == state else 0.0)
            done = 1.0 if state == "ready" else float(st.get("progress") or 0.0)
            progress.add_metric([name], done)
            upd = (
                loaded.slot.status().get("update", {}).get("state", "idle") if loaded is not None else "idle"
            )
            for s in UPDATE_STATES:
                update.add_metric([name, s], 1.0 if s == upd else 0.0)
        yield build
        yield progress
        yield update
