"""What a live model update is made of (edged.serving.update): the versions of a model a server can
run, the requests that ask for one, and the events every step reports. Plain data, no threads."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from edged.decoders.base import Decoder
from edged.infer.base import Engine

# What the metric and the MQTT replies count (edged_model_updates_total{result}).
RESULTS = ("shadow_started", "switched", "forced", "refused", "rolled_back", "failed", "rejected")

# (file) -> (engine, its decoder, the started background build of a better engine or None)
OpenVersion = Callable[[Path], tuple[Engine, Decoder, Any]]


@dataclass
class Version:
    """One model file's engine and decoder, as the server runs it."""

    engine: Engine
    decoder: Decoder
    path: Path
    sha256: str
    build: Any = None  # edged.infer.builder.BackgroundBuild of its better engine, until it is adopted

    @property
    def label(self) -> str:
        return f"{self.path.name}@{self.sha256[:12]}"


@dataclass(frozen=True)
class UpdateRequest:
    action: Literal["update", "force", "rollback"]
    path: Path | None = None
    sha256: str = ""
    trigger: str = "mqtt"  # mqtt | sighup


@dataclass(frozen=True)
class UpdateEvent:
    model: str
    result: str  # one of RESULTS
    label: str
    trigger: str
    reason: str = ""
    report: dict[str, Any] | None = None
    path: str = ""
