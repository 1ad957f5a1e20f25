"""What the analytics of a frame found: `SceneEvent`s (a line crossed, a zone entered, left or loitered
in), handed to the publish layer (edged.publish.scene builds the MQTT payloads) on the FrameResult."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from edged.types import Detection

Kind = Literal["crossing", "enter", "exit", "loiter"]
KINDS: tuple[Kind, ...] = ("crossing", "enter", "exit", "loiter")


@dataclass(frozen=True)
class SceneEvent:
    """One analytics event of one track, decided on frame `seq` (analytics time `t`, seconds).

    `at_seq`/`at_t` is when it happened, which may be earlier: a crossing's first frame past the line
    (a young track's crossing counts once it is `min_age` old), a zone entry's or exit's first frame of
    the `inertia` run. Zone events carry `since_t` (first frame inside) and `dwell_s`; exits a `reason`
    (`left`: seen outside; `lost`: the track ended while inside). `counts` (a crossing: the line's
    totals after it, per direction) and `occupancy` (a zone event: objects inside after it, per label)
    are copies."""

    kind: Kind
    name: str  # the line or zone
    track_id: int
    label: str
    seq: int
    t: float
    at_seq: int
    at_t: float
    detection: Detection  # the track's latest detection, children (e.g. its plate text) included
    direction: Literal["in", "out"] | None = None
    point: tuple[float, float] | None = None  # the anchor (a crossing: the first one past the line)
    since_t: float | None = None
    dwell_s: float | None = None
    speed_kmh: float | None = None
    reason: Literal["left", "lost"] | None = None
    counts: dict[str, int] = field(default_factory=dict)
    occupancy: dict[str, int] = field(default_factory=dict)

    @property
    def topic(self) -> str:
        """Where it is published below the camera: crossings/<line> or zones/<zone>."""
        return f"crossings/{self.name}" if self.kind == "crossing" else f"zones/{self.name}"
