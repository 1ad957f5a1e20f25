"""Checks of the cameras' analytics against the rest of the config (run by the loader on every load:
check-config, start, SIGHUP): points outside the frame size a camera sets, points beyond its
calibration's horizon, classes the detector never gives or the first stage drops, lines and zones on a
camera without a chain. Each problem has its key path, so it is reported at file:line:column."""

from __future__ import annotations

from pathlib import Path

from edged.config.analytics import frame_problems, horizon_problems
from edged.config.cameras import CameraConfig
from edged.config.problems import Loc
from edged.config.schema import Config


def model_labels(cfg: Config, model: str) -> list[str] | None:
    """The labels the model's detections can carry, when the config says (None: unknown)."""
    m = cfg.models.get(model)
    if m is None:
        return None
    if m.kind == "ppocr_det":
        return ["text"]
    if m.labels is not None:
        try:
            return [
                ln.strip() for ln in Path(m.labels).read_text(encoding="utf-8").splitlines() if ln.strip()
            ]
        except (OSError, UnicodeDecodeError):
            return None  # the labels file is reported by the model file checks
    return None


def analytics_problems(cfg: Config) -> list[tuple[Loc, str]]:
    """What the analytics of each camera get wrong against the rest of the config: points outside the
    configured frame size, classes the detector never gives, lines and zones on a camera without a chain."""
    out: list[tuple[Loc, str]] = []
    for cam_name, cam in cfg.cameras.items():
        an = cam.analytics
        at: Loc = ("cameras", cam_name, "analytics")
        if not an.active and an.calibration is None:
            continue
        if not cam.chain:
            out.append((at, "lines and zones need a chain (a detector) to have tracks to count"))
            continue
        if cam.width and cam.height:
            out += [((*at, *loc), msg) for loc, msg in frame_problems(an, cam.width, cam.height)]
        out += [((*at, *loc), msg) for loc, msg in horizon_problems(an)]
        out += _class_problems(cfg, cam, at)
    return out


def _class_problems(cfg: Config, cam: CameraConfig, at: Loc) -> list[tuple[Loc, str]]:
    first = cam.chain[0]
    labels = model_labels(cfg, first.model)
    kept = first.classes
    out: list[tuple[Loc, str]] = []
    for kind, items in (("lines", cam.analytics.lines), ("zones", cam.analytics.zones)):
        for name, item in items.items():
            for i, cls in enumerate(item.classes or []):
                loc = (*at, kind, name, "classes", i)
                if labels is not None and cls not in labels:
                    shown = ", ".join(labels[:12]) + (", ..." if len(labels) > 12 else "")
                    out.append((loc, f"unknown class {cls!r}: model {first.model} gives {shown}"))
                elif kept is not None and cls not in kept:
                    out.append(
                        (
                            loc,
                            f"class {cls!r} never reaches the tracker: the first stage keeps only {', '.join(kept)}",
                        )
                    )
    return out
