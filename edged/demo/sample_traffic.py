"""The traffic sample: plates driving on a calibrated road, with the truth of every line crossing, zone
visit, speed and identity (issue 25: lines, zones, dwell, speed, a tracker that keeps identities).

A camera looks down a three-lane road at a slant: the ground is a plane whose metres map into the image
by a homography (`IMAGE_CORNERS`: 30 m of road across the frame, 10 m deep, far rows smaller), so the
scene's `calibration` (four image points and their ground positions) is exact. Each plate stands in for a
vehicle: its reference point (the bottom centre of the plate, where a detector's box has its bottom
centre) moves on the ground at a known speed, along straight legs with stops in between; the plate is
drawn at one size everywhere (PP-OCR needs text about 30 px tall), so only its position follows the
perspective. The schedule is fixed (the seed picks texts, fonts and colours):

- line `gate` (ground X = 11 m, across the road; `in` = moving right): four plates cross it in, two out;
- line `lane` (ground Y = 3.5 m, between the near and mid lanes, from X = 14 m on; `in` = moving up):
  one plate walks up across it;
- zone `bay` (ground X 15..21 m on the far lane): one plate passes through, one stops in it for 4 s
  (past the 3 s loitering threshold), one for 1.5 s;
- two paths cross: a large sign walking up the road passes over a plate driving along the near lane,
  which is hidden for seven frames (its box cut short by the sign's edge first); both cross lines.

With `frames` shorter than the schedule the clip stops early and the truth lists only what happened in
it (the first 26 frames hold one `gate` crossing each way and one pass through `bay`: the short clip of
the 8-camera test).

    truth = make_traffic_sample("samples/traffic.mp4")   # also writes samples/traffic.json

The sidecar has edged.demo.sample's keys (the per-frame truth also names each plate's `object` and its
reference point `ref`) plus `scene: "traffic"`, `calibration`, `lines`, `zones` (as an edged config writes
them), `objects` (text, first speed, first and last frame in view), `crossings` (line, object,
direction, the first frame past the line, speed), `zone_visits` (first frame inside, first frame
outside again, dwell, the frame loitering starts) and `crossing_paths` (the frames two plates overlap).
Everything runs in the caller's thread.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edged.demo.sample import PLATE_COLORS, Plate, SampleScene, Truth, plate_text, write_scene

SIZE = (640, 360)
FPS = 5.0
FRAMES = 100
SHORT_FRAMES = 26  # the first act only: one `gate` crossing each way, one pass through `bay`
# Ground rectangle (X along the road, Y across it, metres) -> the image trapezoid it covers.
GROUND_CORNERS = ((0.0, 0.0), (30.0, 0.0), (30.0, 10.0), (0.0, 10.0))
IMAGE_CORNERS = ((0.0, 350.0), (640.0, 350.0), (520.0, 40.0), (120.0, 40.0))
LANES = {"near": 2.0, "mid": 5.0, "far": 8.0}  # ground Y of each lane's centre
GATE_X = 11.0  # line `gate`: across the road; `in` = moving right (X grows)
LANE_Y, LANE_X = 3.5, (14.0, 29.0)  # line `lane`: between the near and mid lanes; `in` = moving up (Y grows)
BAY = ((15.0, 6.5), (21.0, 6.5), (21.0, 9.5), (15.0, 9.5))  # zone `bay`: ground corners, far lane
LOITER_S = 3.0

# Each plate: (first frame, [(ground X, Y, frames to get there from the previous point), ...]); a leg
# that stays on one point is a stop. Speeds follow from the legs (metres per frame x fps x 3.6 = km/h).
SCHEDULE: tuple[tuple[float, tuple[tuple[float, float, float], ...]], ...] = (
    (2, ((3.0, 5.0, 0), (27.0, 5.0, 24.0 / 1.2))),  # mid lane, right: gate in; 21.6 km/h
    (4, ((28.0, 8.0, 0), (2.0, 8.0, 26.0 / 1.6))),  # far lane, left through bay: gate out; 28.8 km/h
    (30, ((4.5, 8.0, 0), (18.0, 8.0, 13.5), (18.0, 8.0, 20.0), (28.5, 8.0, 10.5))),  # stops 4 s in bay
    (40, ((3.8, 2.0, 0), (26.5, 2.0, 22.7 / 1.4))),  # near lane, right: gate in; 25.2 km/h
    # A large sign walks up the road (5.4 km/h) across the near lane just as the previous plate passes:
    # it hides it for seven frames. Then it crosses `lane` and drives left along the mid lane (gate out).
    (46.1, ((17.0, 0.5, 0), (17.0, 4.2, 3.7 / 0.3), (2.0, 4.2, 15.0 / 1.2))),
    (70, ((1.5, 8.0, 0), (18.0, 8.0, 16.5 / 1.4), (18.0, 8.0, 7.5), (28.5, 8.0, 10.5 / 1.4))),  # stops 1.5 s
)
CAP_PX: dict[int, float] = {4: 48.0}  # cap height (px) of plates drawn larger than the rest (the sign)


def ground_to_image() -> np.ndarray:
    """The scene's homography, ground metres -> image pixels (3x3)."""
    import cv2

    return np.asarray(
        cv2.getPerspectiveTransform(
            np.asarray(GROUND_CORNERS, np.float32), np.asarray(IMAGE_CORNERS, np.float32)
        )
    )


def project(h: np.ndarray, x: float, y: float) -> tuple[float, float]:
    u, v, w = h @ np.array([x, y, 1.0])
    return float(u / w), float(v / w)


@dataclass(frozen=True)
class TrafficPlate(Plate):
    """A plate whose reference point (the bottom centre of the plate) follows a ground path: `path` holds
    (frame, X, Y) knots, linear in between; `offset` is the plate centre minus its reference point
    in pixels; `h` the ground -> image homography (row-major)."""

    path: tuple[tuple[float, float, float], ...] = ()
    offset: tuple[float, float] = (0.0, 0.0)
    h: tuple[float, ...] = ()

    def ground(self, frame: float) -> tuple[float, float]:
        knots = self.path
        if frame <= knots[0][0]:
            return knots[0][1], knots[0][2]
        for (f0, x0, y0), (f1, x1, y1) in itertools.pairwise(knots):
            if frame <= f1:
                a = (frame - f0) / (f1 - f0) if f1 > f0 else 1.0
                return x0 + (x1 - x0) * a, y0 + (y1 - y0) * a
        return knots[-1][1], knots[-1][2]

    def speed_kmh(self, frame: float, fps: float) -> float:
        """Ground speed at `frame` (on the leg that contains it), km/h."""
        knots = self.path
        for (f0, x0, y0), (f1, x1, y1) in itertools.pairwise(knots):
            if f0 <= frame <= f1 and f1 > f0:
                return math.hypot(x1 - x0, y1 - y0) / (f1 - f0) * fps * 3.6
        return 0.0

    def ref(self, frame: int) -> tuple[float, float]:
        return project(np.asarray(self.h).reshape(3, 3), *self.ground(frame))

    def center(self, frame: int) -> tuple[float, float]:
        rx, ry = self.ref(frame)
        return rx + self.offset[0], ry + self.offset[1]


class TrafficScene(SampleScene):
    """The road scene: `frames` frames (at most the schedule's FRAMES) at `fps`."""

    def __init__(self, frames: int = FRAMES, fps: float = FPS, seed: int = 25) -> None:
        super().__init__(frames=0, seed=seed, size=SIZE)  # background and noise stream; no random plates
        self.frames = max(1, min(frames, FRAMES))
        self.fps = fps
        self.h = ground_to_image()
        rng = np.random.default_rng([seed, 25])
        self.plates = [
            self._traffic_plate(rng, start, legs, CAP_PX.get(k)) for k, (start, legs) in enumerate(SCHEDULE)
        ]
        self._road()

    def _traffic_plate(
        self,
        rng: np.random.Generator,
        start: float,
        legs: tuple[tuple[float, float, float], ...],
        cap_px: float | None = None,
    ) -> TrafficPlate:
        cv2 = self.cv2
        text = plate_text(rng)
        font = cv2.FONT_HERSHEY_SIMPLEX if rng.random() < 0.5 else cv2.FONT_HERSHEY_DUPLEX
        thickness = 2
        (_, h1), _ = cv2.getTextSize(text, font, 1.0, thickness)
        drawn = float(rng.uniform(27.0, 31.0))  # drawn either way: the next choices stay the same
        scale = (cap_px or drawn) / h1
        angle = float(rng.uniform(-1.5, 1.5))
        color = PLATE_COLORS[int(rng.integers(len(PLATE_COLORS)))]
        knots, f = [], float(start)
        for x, y, frames in legs:
            f += frames
            knots.append((f, x, y))
        base = TrafficPlate(text, font, scale, thickness, color, angle, 0, 1, 0.0, 0.0, 0.0, 0.0)
        base = dataclasses.replace(base, path=tuple(knots), h=tuple(self.h.ravel().tolist()))
        # Where the plate's bottom centre sits relative to its centre (rotation included).
        probe = dataclasses.replace(base, offset=(0.0, 0.0))
        cx, cy = probe.center(0)
        _, _, plate_quad, _ = self._geometry(probe, 0)
        bx, by = (plate_quad[2] + plate_quad[3]) / 2
        plate = dataclasses.replace(base, offset=(cx - float(bx), cy - float(by)))
        # The truth window: the frames where the whole plate is in view.
        last = min(self.frames - 1, math.ceil(knots[-1][0]))
        visible = [i for i in range(math.floor(knots[0][0]), last + 1) if self._inside(plate, i)]
        if not visible:  # not in this (shortened) clip at all
            return dataclasses.replace(plate, start=0, end=0)
        return dataclasses.replace(plate, start=visible[0], end=visible[-1] + 1)

    def _inside(self, p: Plate, frame: int) -> bool:
        _, _, quad, _ = self._geometry(p, frame)
        w = self.width
        return bool((quad[:, 0] >= 2).all() and (quad[:, 0] <= w - 3).all() and (quad[:, 1] >= 2).all())

    def _road(self) -> None:
        """Lane markings on the background: a static scene the detector must ignore."""
        cv2 = self.cv2
        for y in (0.5, 3.5, 6.5, 9.5):
            a, b = project(self.h, 0.0, y), project(self.h, 30.0, y)
            cv2.line(self.background, (round(a[0]), round(a[1])), (round(b[0]), round(b[1])), (200,) * 3, 2)

    # -- truth --------------------------------------------------------------------------------------

    def truth(self, frame: int) -> list[dict[str, Any]]:
        out = []
        for k, p in enumerate(self.plates):
            if p.start <= frame < p.end:
                _, text_quad, plate_quad, _ = self._geometry(p, frame)
                rx, ry = p.ref(frame)  # type: ignore[attr-defined]
                out.append(
                    {
                        "text": p.text,
                        "object": k,
                        "polygon": [[round(float(x), 1), round(float(y), 1)] for x, y in text_quad],
                        "plate": [[round(float(x), 1), round(float(y), 1)] for x, y in plate_quad],
                        "ref": [round(rx, 2), round(ry, 2)],
                    }
                )
        return out

    def calibration(self) -> dict[str, list[list[float]]]:
        """Four road points (the bay's corners widened to the lane marks) and their ground metres."""
        ground = [(4.0, 0.5), (26.0, 0.5), (26.0, 9.5), (4.0, 9.5)]
        image = [project(self.h, x, y) for x, y in ground]
        return {
            "image": [[round(x, 2), round(y, 2)] for x, y in image],
            "ground": [[x, y] for x, y in ground],
        }

    def lines(self) -> dict[str, dict[str, Any]]:
        gate = [project(self.h, GATE_X, 0.2), project(self.h, GATE_X, 9.8)]
        lane = [project(self.h, LANE_X[0], LANE_Y), project(self.h, LANE_X[1], LANE_Y)]
        return {
            "gate": {"points": [[round(x, 1), round(y, 1)] for x, y in gate], "in_direction": "right"},
            "lane": {"points": [[round(x, 1), round(y, 1)] for x, y in lane], "in_direction": "up"},
        }

    def zones(self) -> dict[str, dict[str, Any]]:
        pts = [project(self.h, x, y) for x, y in BAY]
        return {"bay": {"points": [[round(x, 1), round(y, 1)] for x, y in pts], "loiter_s": LOITER_S}}

    def _seen(self, k: int) -> list[int]:
        p = self.plates[k]
        return list(range(p.start, min(p.end, self.frames)))

    def crossings(self) -> list[dict[str, Any]]:
        """Every line crossing of a plate's reference point between two frames it is in view."""
        out = []
        for k, p in enumerate(self.plates):
            assert isinstance(p, TrafficPlate)
            frames = self._seen(k)
            for prev, cur in itertools.pairwise(frames):
                (x0, y0), (x1, y1) = p.ground(prev), p.ground(cur)
                on_lane = LANE_X[0] <= (x0 + x1) / 2 <= LANE_X[1]
                for line, before, after, direction in (
                    ("gate", x0 < GATE_X, x1 >= GATE_X, "in"),
                    ("gate", x0 >= GATE_X, x1 < GATE_X, "out"),
                    ("lane", on_lane and y0 < LANE_Y, y1 >= LANE_Y, "in"),
                    ("lane", on_lane and y0 >= LANE_Y, y1 < LANE_Y, "out"),
                ):
                    if before and after:
                        out.append(
                            {
                                "line": line,
                                "object": k,
                                "text": p.text,
                                "direction": direction,
                                "frame": cur,
                                "speed_kmh": round(p.speed_kmh(cur - 0.5, self.fps), 2),
                            }
                        )
        return sorted(out, key=lambda c: (c["frame"], c["line"]))

    def zone_visits(self) -> list[dict[str, Any]]:
        """Each stay of a plate's reference point in `bay`: first frame inside, first outside again."""
        (x_lo, y_lo), (x_hi, y_hi) = BAY[0], BAY[2]
        out = []
        for k, p in enumerate(self.plates):
            assert isinstance(p, TrafficPlate)
            inside = [
                i for i in self._seen(k) if x_lo <= p.ground(i)[0] <= x_hi and y_lo <= p.ground(i)[1] <= y_hi
            ]
            if not inside:
                continue
            enter, last_in = inside[0], inside[-1]
            exit_frame = last_in + 1 if last_in + 1 < min(p.end, self.frames) else None
            dwell_frames = (exit_frame if exit_frame is not None else last_in + 1) - enter
            loiter = enter + math.ceil(LOITER_S * self.fps)
            out.append(
                {
                    "zone": "bay",
                    "object": k,
                    "text": p.text,
                    "enter": enter,
                    "exit": exit_frame,
                    "dwell_s": round(dwell_frames / self.fps, 3),
                    "loiter": loiter if loiter <= last_in else None,
                    "speed_kmh": round(p.speed_kmh(enter - 0.5, self.fps), 2),
                }
            )
        return out

    def crossing_paths(self) -> list[dict[str, Any]]:
        """Pairs of plates whose boxes overlap in some frame (one drawn over the other)."""
        out = []
        for a in range(len(self.plates)):
            for b in range(a + 1, len(self.plates)):
                both = sorted(set(self._seen(a)) & set(self._seen(b)))
                hit = [i for i in both if _overlap(self._box(a, i), self._box(b, i)) > 0]
                if hit:
                    out.append({"objects": [a, b], "first": hit[0], "last": hit[-1]})
        return out

    def _box(self, k: int, frame: int) -> tuple[float, float, float, float]:
        _, _, quad, _ = self._geometry(self.plates[k], frame)
        return (
            float(quad[:, 0].min()),
            float(quad[:, 1].min()),
            float(quad[:, 0].max()),
            float(quad[:, 1].max()),
        )

    def objects(self) -> list[dict[str, Any]]:
        out = []
        for k, p in enumerate(self.plates):
            assert isinstance(p, TrafficPlate)
            moving = [s for f0 in (p.path[0][0],) if (s := p.speed_kmh(f0 + 0.5, self.fps)) > 0]
            out.append(
                {
                    "object": k,
                    "text": p.text,
                    "speed_kmh": round(moving[0], 2) if moving else 0.0,
                    "first": p.start,
                    "last": min(p.end, self.frames) - 1,
                }
            )
        return out


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return max(0.0, w) * max(0.0, h)


def make_traffic_sample(
    path: str | Path,
    frames: int = FRAMES,
    fps: float = FPS,
    seed: int = 25,
    codec: Literal["mp4v", "mjpg"] = "mp4v",
) -> Truth:
    """Write the traffic video and its sidecar (the video path with .json); return the per-frame truth."""
    scene = TrafficScene(frames, fps, seed)
    return write_scene(scene, path, fps, codec, extra=scene_extra(scene))


def scene_extra(scene: TrafficScene) -> dict[str, Any]:
    """The sidecar's traffic keys (what `make_traffic_sample` writes beside the per-frame truth)."""
    return {
        "scene": "traffic",
        "calibration": scene.calibration(),
        "lines": scene.lines(),
        "zones": scene.zones(),
        "objects": scene.objects(),
        "crossings": scene.crossings(),
        "zone_visits": scene.zone_visits(),
        "crossing_paths": scene.crossing_paths(),
    }
