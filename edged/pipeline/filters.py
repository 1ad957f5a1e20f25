"""Which detections a stage keeps (first stage) or crops (later stages): classes, score, size, ROI."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edged.types import Detection


@dataclass(frozen=True)
class StageFilter:
    classes: frozenset[str] | None = None
    min_score: float = 0.0
    min_size: tuple[float, float] = (0.0, 0.0)
    roi: tuple[tuple[float, float], ...] | None = None
    max_count: int | None = None

    def select(self, detections: Sequence[Detection]) -> list[Detection]:
        """The detections that pass, highest score first when max_count cuts, else in input order."""
        kept = [d for d in detections if self._passes(d)]
        if self.max_count is not None and len(kept) > self.max_count:
            order = sorted(range(len(kept)), key=lambda i: -kept[i].score)[: self.max_count]
            kept = [kept[i] for i in sorted(order)]
        return kept

    def _passes(self, d: Detection) -> bool:
        if self.classes is not None and d.label not in self.classes:
            return False
        if d.score < self.min_score:
            return False
        if d.width < self.min_size[0] or d.height < self.min_size[1]:
            return False
        if self.roi is not None:
            cx, cy = (d.box[0] + d.box[2]) / 2, (d.box[1] + d.box[3]) / 2
            if not point_in_polygon(cx, cy, self.roi):
                return False
        return True


def point_in_polygon(x: float, y: float, polygon: Sequence[tuple[float, float]]) -> bool:
    """Even-odd rule; points on an edge count as inside."""
    pts = np.asarray(polygon, dtype=np.float64)
    inside = False
    n = len(pts)
    for i in range(n):
        (x1, y1), (x2, y2) = pts[i], pts[(i + 1) % n]
        if min(y1, y2) <= y <= max(y1, y2) and min(x1, x2) <= x <= max(x1, x2):
            cross = (x2 - x1) * (y - y1) - (y2 - y1) * (x - x1)
            if abs(cross) < 1e-9:
                return True
        if (y1 > y) != (y2 > y):
            xint = x1 + (y - y1) * (x2 - x1) / (y2 - y1)
            if x < xint:
                inside = not inside
    return inside
