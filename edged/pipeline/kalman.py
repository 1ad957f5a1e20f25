"""A constant-velocity Kalman filter of one box, the motion model of the tracker (edged.pipeline.tracker).

The state is SORT's and ByteTrack's: the box centre, width and height, each with its velocity in pixels
per frame. With the constant-velocity model, a diagonal process noise and a diagonal measurement noise
(ByteTrack's choices), the four coordinates never mix: the 8x8 covariance stays made of four 2x2
blocks (position, velocity) if it starts so. So each coordinate is filtered on its own with the
closed-form 2-state equations below, which are exactly the 8-state filter's, in plain floats (a few
microseconds a box; no matrix library call per track).

Noise follows ByteTrack's weights, scaled per axis by the box's own size (the width for x and w, the
height for y and h: a plate is wide and flat, a person tall and thin): position noise 1/20 of the
size per frame, velocity noise 1/160, measurement noise 1/20. Time is in frames (the camera's frame
numbers), so a frame the detector did not run on (motion gating) or that was dropped is one more
step of prediction, not a jump.

Owned by one track, used on its camera's pipeline thread only.
"""

from __future__ import annotations

Box = tuple[float, float, float, float]  # x1, y1, x2, y2

STD_POS, STD_VEL, STD_MEAS = 1.0 / 20, 1.0 / 160, 1.0 / 20


def _xywh(box: Box) -> list[float]:
    x1, y1, x2, y2 = box
    return [(x1 + x2) / 2, (y1 + y2) / 2, max(x2 - x1, 1e-3), max(y2 - y1, 1e-3)]


def _box(z: list[float]) -> Box:
    cx, cy, w, h = z
    w, h = max(w, 1e-3), max(h, 1e-3)
    return cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2


class BoxKalman:
    """One box's state (`x`: cx, cy, w, h; `v`: their velocities per frame) as of frame `seq`, with the
    2x2 covariance of each coordinate in `p00` (position), `p01`, `p11` (velocity)."""

    __slots__ = ("p00", "p01", "p11", "seq", "v", "x")

    def __init__(self, box: Box, seq: int) -> None:
        self.x = _xywh(box)
        self.v = [0.0, 0.0, 0.0, 0.0]
        scale = self._scale()
        self.p00 = [(2 * STD_POS * s) ** 2 for s in scale]
        self.p01 = [0.0, 0.0, 0.0, 0.0]
        self.p11 = [(10 * STD_VEL * s) ** 2 for s in scale]
        self.seq = seq

    def _scale(self) -> tuple[float, float, float, float]:
        w, h = self.x[2], self.x[3]
        return w, h, w, h

    def predicted(self, seq: int) -> Box:
        """The box expected at frame `seq` (nothing changes)."""
        dt = max(0, seq - self.seq)
        return _box([x + v * dt for x, v in zip(self.x, self.v, strict=True)])

    @property
    def velocity(self) -> tuple[float, float]:
        """The centre's velocity, pixels per frame."""
        return self.v[0], self.v[1]

    def _predict(self, seq: int) -> None:
        dt = seq - self.seq
        if dt <= 0:
            return
        for i, s in enumerate(self._scale()):
            self.x[i] += self.v[i] * dt
            p00, p01, p11 = self.p00[i], self.p01[i], self.p11[i]
            self.p00[i] = p00 + 2 * dt * p01 + dt * dt * p11 + dt * (STD_POS * s) ** 2
            self.p01[i] = p01 + dt * p11
            self.p11[i] = p11 + dt * (STD_VEL * s) ** 2
        self.seq = seq

    def update(self, box: Box, seq: int) -> None:
        """Predict to frame `seq`, then correct with the box measured there."""
        self._predict(seq)
        z = _xywh(box)
        for i, s in enumerate(self._scale()):
            p00, p01, p11 = self.p00[i], self.p01[i], self.p11[i]
            gain_x = p00 / (p00 + (STD_MEAS * s) ** 2)
            gain_v = p01 / (p00 + (STD_MEAS * s) ** 2)
            innovation = z[i] - self.x[i]
            self.x[i] += gain_x * innovation
            self.v[i] += gain_v * innovation
            self.p00[i] = (1 - gain_x) * p00
            self.p01[i] = (1 - gain_x) * p01
            self.p11[i] = p11 - gain_v * p01

    def hold(self, seq: int) -> None:
        """The object was seen standing still up to frame `seq` (motion gating found no motion): it is
        where it was, and not moving."""
        self.seq = max(self.seq, seq)
        self.v = [0.0, 0.0, 0.0, 0.0]
