"""A constant-velocity Kalman filter of one box, the motion model of the tracker (edged.pipeline.tracker).

The state is SORT's and ByteTrack's: the box centre, width and height, each with its velocity in pixels
per frame. With the constant-velocity model, a diagonal process noise and a diagonal measurement noise
(ByteTrack's choices), the four coordinates never mix: the 8x8 covariance stays made of four 2x2
blocks (position, velocity) if it starts so. So each coordinate is filtered on its own with the
closed-form 2-state equations below, which are exactly the 8-state filter's, in plain floats (a few
microseconds a box; no matrix library call per track).

One departure from the textbook model: across frames without a measurement, the size stops growing or
shrinking after one frame (its velocity is not extrapolated further). A box cut short by whatever
passes in front of the object has a size "velocity" that says nothing about the object; extrapolated
over the frames it is hidden, it shrinks the predicted box to nothing, and the object, back in view,
is no longer recognised (on the traffic sample: the plate a sign is carried over).

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
_POS2, _VEL2, _MEAS2 = STD_POS**2, STD_VEL**2, STD_MEAS**2  # variances per unit of size squared


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
        x, v = self.x, self.v
        ds = min(dt, 1)  # the size follows its velocity for one frame only (module docstring)
        return _box([x[0] + v[0] * dt, x[1] + v[1] * dt, x[2] + v[2] * ds, x[3] + v[3] * ds])

    @property
    def velocity(self) -> tuple[float, float]:
        """The centre's velocity, pixels per frame."""
        return self.v[0], self.v[1]

    def update(self, box: Box, seq: int) -> None:
        """Predict to frame `seq`, then correct with the box measured there (per coordinate: the
        2-state predict and update equations; one loop, plain floats)."""
        dt = max(0, seq - self.seq)
        z = _xywh(box)
        x, v, p00, p01, p11 = self.x, self.v, self.p00, self.p01, self.p11
        w2, h2 = x[2] * x[2], x[3] * x[3]
        for i in range(4):
            size2 = h2 if i & 1 else w2  # cx, w scale with the width; cy, h with the height
            # Predict dt frames ahead: x += v dt; P = F P F' + Q dt.
            a = p00[i] + dt * (2 * p01[i] + dt * p11[i] + _POS2 * size2)
            b = p01[i] + dt * p11[i]
            c = p11[i] + dt * _VEL2 * size2
            xi = x[i] + v[i] * (dt if i < 2 else min(dt, 1))
            # Correct with the measurement z (noise r): gains, state, covariance.
            inv = 1.0 / (a + _MEAS2 * size2)
            gain_x, gain_v = a * inv, b * inv
            innovation = z[i] - xi
            x[i] = xi + gain_x * innovation
            v[i] += gain_v * innovation
            p00[i], p01[i], p11[i] = (1 - gain_x) * a, (1 - gain_x) * b, c - gain_v * b
        self.seq = max(self.seq, seq)

    def hold(self, seq: int) -> None:
        """The object was seen standing still up to frame `seq` (motion gating found no motion): it is
        where it was, and not moving."""
        self.seq = max(self.seq, seq)
        self.v = [0.0, 0.0, 0.0, 0.0]
