"""Checks of the cameras' analytics against the rest of the config (run by the loader on every load:
check-config, start, SIGHUP): points outside the frame size a camera sets, points beyond its
calibration's horizon, classes the detector never gives or the first stage drops, lines and zones on a
camera without a chain. Each problem has its key path, so it is reported at file:line:column."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edged.config.analytics import frame_problems, horizon_problems
from edged.config.cameras import CameraConfig
from edged.config.inference import ModelConfig
from edged.config.problems import Loc
from edged.config.schema import Config


def model_labels(model: ModelConfig | None, base: Path | None = None) -> list[str] | None:
    """The labels a model's detections can carry, when the config says (None: unknown). `base`: the
    folder a relative labels path is relative to (None: it was resolved already)."""
    if model is None:
        return None
    if model.kind == "ppocr_det":
        return ["text"]
    if model.labels is None:
        return None
    path = Path(model.labels)
    if base is not None and not path.is_absolute():
        path = base / path
    try:
        return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError):
        return None  # the labels file is reported by the model file checks


def analytics_problems(cfg: Config) -> list[tuple[Loc, str]]:
    """What the analytics of each camera get wrong against the rest of the config."""
    out: list[tuple[Loc, str]] = []
    for name, cam in cfg.cameras.items():
        out += camera_problems(name, cam, cfg.models)
    return out


def raw_analytics_problems(data: dict[str, Any], base: Path) -> list[tuple[Loc, str]]:
    """The same checks on raw config data that failed the schema elsewhere (so one run lists them all):
    for each camera and model that validate on their own."""
    cameras = data.get("cameras")
    raw_models = data.get("models")
    models: dict[str, ModelConfig] = {}
    for name, m in raw_models.items() if isinstance(raw_models, dict) else ():
        try:
            models[name] = ModelConfig.model_validate(m)
        except ValidationError:
            continue
    out: list[tuple[Loc, str]] = []
    for name, raw in cameras.items() if isinstance(cameras, dict) else ():
        try:
            cam = CameraConfig.model_validate(raw)
        except ValidationError:
            continue  # its own problems are among the schema's
        out += camera_problems(name, cam, models, base)
    return out


def camera_problems(
    name: str, cam: CameraConfig, models: Mapping[str, ModelConfig], base: Path | None = None
) -> list[tuple[Loc, str]]:
    """Points outside the frame size the camera sets, points beyond its calibration's horizon, classes
    its detector never gives (or its first stage drops), lines and zones without a chain."""
    an = cam.analytics
    at: Loc = ("cameras", name, "analytics")
    if not an.active and an.calibration is None:
        return []
    if not cam.chain:
        return [(at, "lines and zones need a chain (a detector) to have tracks to count")]
    out: list[tuple[Loc, str]] = []
    if cam.width and cam.height:
        out += [((*at, *loc), msg) for loc, msg in frame_problems(an, cam.width, cam.height)]
    out += [((*at, *loc), msg) for loc, msg in horizon_problems(an)]
    first = cam.chain[0]
    labels = model_labels(models.get(first.model), base)
    for kind, items in (("lines", an.lines), ("zones", an.zones)):
        for item_name, item in items.items():
            for i, cls in enumerate(item.classes or []):
                loc = (*at, kind, item_name, "classes", i)
                if labels is not None and cls not in labels:
                    shown = ", ".join(labels[:12]) + (", ..." if len(labels) > 12 else "")
                    out.append((loc, f"unknown class {cls!r}: model {first.model} gives {shown}"))
                elif first.classes is not None and cls not in first.classes:
                    kept = ", ".join(first.classes)
                    out.append(
                        (loc, f"class {cls!r} never reaches the tracker: the first stage keeps only {kept}")
                    )
    return out
