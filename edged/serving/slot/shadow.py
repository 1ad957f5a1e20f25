"""Shadow check: do two engines of one model (serving and candidate) give the same decoded results?

Pure logic, no threads, no I/O: the caller (a model slot, which runs both engines on the same
frames or crops) feeds `ShadowCheck.add` with both engines' decoded detections per input, then reads
`report()`. Detections with geometry (detectors) are matched by IoU; detections without (classifier
and recognizer results on the same crops) are paired by position. Matched pairs must carry the same
label (class name or read text) and scores within `max_score_drift`; children (later stages' results
under a detection) are compared the same way. A frame disagrees when anything is missing, extra,
relabelled or drifted; the candidate is accepted when at most `max_disagreeing_frames` of the frames
disagree. The report keeps counts and the first few reasons, for the log and the MQTT answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from edged.types import Detection

MAX_REASONS = 10


@dataclass(frozen=True)
class ShadowTolerance:
    min_iou: float = 0.5  # a candidate box matches a serving box at this IoU or more
    max_score_drift: float = 0.05  # largest |score difference| of a matched pair
    max_disagreeing_frames: float = 0.0  # fraction of frames allowed to disagree (0: none)


@dataclass
class ShadowReport:
    frames: int = 0
    disagreeing_frames: int = 0
    matched: int = 0
    missing: int = 0  # in the serving engine's results, not the candidate's
    extra: int = 0  # in the candidate's results only
    label_mismatches: int = 0
    drifted: int = 0
    max_score_drift: float = 0.0
    agree: bool = False
    reasons: list[str] = field(default_factory=list)  # the first MAX_REASONS disagreements

    def summary(self) -> str:
        verdict = "agree" if self.agree else "disagree"
        head = (
            f"{verdict}: {self.frames - self.disagreeing_frames}/{self.frames} frames equal, "
            f"{self.matched} matched, {self.missing} missing, {self.extra} extra, "
            f"{self.label_mismatches} relabelled, max score drift {self.max_score_drift:.3f}"
        )
        return head + (f" ({'; '.join(self.reasons[:3])})" if self.reasons else "")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def box_iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _has_box(d: Detection) -> bool:
    x1, y1, x2, y2 = d.box
    return x2 > x1 and y2 > y1


def _describe(d: Detection) -> str:
    label = d.label or d.attrs.get("text", "") or "(no label)"
    where = f" at {[round(v) for v in d.box]}" if _has_box(d) else ""
    return f"{label!r} ({d.score:.2f}){where}"


def _pairs(old: Sequence[Detection], new: Sequence[Detection], min_iou: float) -> list[tuple[int, int]]:
    """Index pairs: by position when neither side has geometry, else greedy by IoU, best first."""
    if not any(_has_box(d) for d in (*old, *new)):
        return [(i, i) for i in range(min(len(old), len(new)))]
    scored = sorted(
        ((box_iou(a.box, b.box), i, j) for i, a in enumerate(old) for j, b in enumerate(new)), reverse=True
    )
    used_old: set[int] = set()
    used_new: set[int] = set()
    pairs = []
    for iou, i, j in scored:
        if iou < min_iou:
            break
        if i in used_old or j in used_new:
            continue
        used_old.add(i)
        used_new.add(j)
        pairs.append((i, j))
    return pairs


class ShadowCheck:
    """Accumulates comparisons of the serving and the candidate engine over N inputs."""

    def __init__(self, tolerance: ShadowTolerance | None = None) -> None:
        self.tolerance = tolerance or ShadowTolerance()
        self._report = ShadowReport()

    @property
    def frames(self) -> int:
        return self._report.frames

    def add(self, frame: str | int, old: Sequence[Detection], new: Sequence[Detection]) -> bool:
        """Compare one input's results (serving, candidate); True when they agree."""
        r = self._report
        reasons: list[str] = []
        self._compare(old, new, f"frame {frame}", reasons)
        r.frames += 1
        if reasons:
            r.disagreeing_frames += 1
            r.reasons.extend(reasons[: max(0, MAX_REASONS - len(r.reasons))])
        return not reasons

    def _compare(
        self, old: Sequence[Detection], new: Sequence[Detection], where: str, reasons: list[str]
    ) -> None:
        r, tol = self._report, self.tolerance
        pairs = _pairs(old, new, tol.min_iou)
        for i in sorted(set(range(len(old))) - {i for i, _ in pairs}):
            r.missing += 1
            reasons.append(f"{where}: {_describe(old[i])} not found by the candidate")
        for j in sorted(set(range(len(new))) - {j for _, j in pairs}):
            r.extra += 1
            reasons.append(f"{where}: the candidate adds {_describe(new[j])}")
        for i, j in pairs:
            a, b = old[i], new[j]
            r.matched += 1
            if a.label != b.label:
                r.label_mismatches += 1
                reasons.append(f"{where}: {_describe(a)} became {_describe(b)}")
            drift = abs(a.score - b.score)
            r.max_score_drift = max(r.max_score_drift, drift)
            if drift > tol.max_score_drift:
                r.drifted += 1
                reasons.append(
                    f"{where}: score of {a.label!r} drifted {a.score:.3f} -> {b.score:.3f} "
                    f"(more than {tol.max_score_drift})"
                )
            for stage in sorted(set(a.children) | set(b.children)):
                self._compare(
                    a.children.get(stage, []),
                    b.children.get(stage, []),
                    f"{where} > {a.label or i}/{stage}",
                    reasons,
                )

    def report(self) -> ShadowReport:
        r = self._report
        allowed = self.tolerance.max_disagreeing_frames * r.frames
        r.agree = r.frames > 0 and r.disagreeing_frames <= allowed
        if r.frames == 0:
            r.reasons = ["no frames were compared"]
        return ShadowReport(**{**asdict(r), "reasons": list(r.reasons)})


def compare(
    old: Sequence[Sequence[Detection]],
    new: Sequence[Sequence[Detection]],
    tolerance: ShadowTolerance | None = None,
) -> ShadowReport:
    """One report over inputs compared pairwise: old[k] (serving) against new[k] (candidate)."""
    if len(old) != len(new):
        raise ValueError(f"shadow check needs results of the same inputs: {len(old)} vs {len(new)}")
    check = ShadowCheck(tolerance)
    for k, (a, b) in enumerate(zip(old, new, strict=True)):
        check.add(k, a, b)
    return check.report()
