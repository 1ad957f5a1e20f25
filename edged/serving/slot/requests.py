"""What a model slot (edged.serving.slot.slot) holds and hears: the engines it can run, the requests that
ask for a switch, and the events every step reports. Plain data, no threads.

A *switch* is the one word for replacing the engine a model runs: a background build's better engine
switched in, a new file (SIGHUP or MQTT `set/update`) shadow-checked and switched in, a forced switch
(`set/force`), a lower precision, a rollback (`set/rollback`: a switch back to the previous engine).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from edged.decoders.base import Decoder
from edged.infer.base import Engine, TensorSpec

if TYPE_CHECKING:
    from edged.gpu.context import GpuLane
    from edged.serving.precision import PrecisionState
    from edged.serving.slot.shadow import ShadowTolerance

# What the metric and the MQTT replies count (edged_model_updates_total{result}).
RESULTS = ("shadow_started", "switched", "forced", "refused", "rolled_back", "failed", "rejected")

# (file) -> (engine, its decoder, the started background build of a better engine or None)
OpenEngine = Callable[[Path], tuple[Engine, Decoder, Any]]


@dataclass
class SlotEntry:
    """One model file's engine and decoder, as the slot holds it (serving, candidate or previous)."""

    engine: Engine
    decoder: Decoder
    path: Path
    sha256: str
    build: Any = None  # edged.infer.builder.BackgroundBuild of its better engine, until it is switched in

    @property
    def label(self) -> str:
        return f"{self.path.name}@{self.sha256[:12]}"


@dataclass(frozen=True)
class SwitchRequest:
    action: Literal["update", "force", "rollback"]  # the MQTT commands' names
    path: Path | None = None
    sha256: str = ""
    trigger: str = "mqtt"  # mqtt | sighup | precision


@dataclass(frozen=True)
class SwitchEvent:
    model: str
    result: str  # one of RESULTS
    label: str
    trigger: str
    reason: str = ""
    report: dict[str, Any] | None = None
    path: str = ""


@dataclass
class FileSwitching:
    """What a slot needs to switch to other files of its model (edged.serving.loading makes it): how an
    engine of the model is opened, the file serving now, the input every file must have, the shadow
    check's settings, the lane candidates warm on, and the model's lower-precision plan."""

    open_engine: OpenEngine
    path: Path
    sha256: str
    model_input: TensorSpec  # what the declared shapes were made for
    frames: int = 20
    tolerance: ShadowTolerance | None = None
    lane: GpuLane | None = None  # beside the serving lane: candidates' and builds' warm-ups
    precision: PrecisionState | None = None
