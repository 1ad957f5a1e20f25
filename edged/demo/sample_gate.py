"""The gate sample: a long, mostly empty scene where a car with a plate passes now and then.

What motion gating is for (issue 16): a static view with sensor noise, slow lighting drift and sudden
lighting changes (a cloud), a swaying tree and a burned-in clock (what masks are for), and now and then
a car that drives in, waits a few seconds at the barrier and drives on, with one plate. Plates are in
view about 8 % of the time and cars move about 7 % of it with the defaults (7 cars in 10 minutes). Deterministic for a given seed, like edged.demo.sample, whose plate rendering it reuses.

    truth = make_gate_sample("samples/gate.mp4", seconds=600, fps=5)   # also writes samples/gate.json

The sidecar has edged.demo.sample's keys plus `scene: "gate"`, `passes` (each plate's text and the first and
last frame it is fully in view), `lighting_changes` (frames where a sudden change starts) and `masks`
(polygons, in frame pixels, of the tree and the clock: what a motion config would mask out).
Everything here runs in the caller's thread.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edged.demo.sample import (
    PLATE_COLORS,
    Codec,
    Plate,
    SampleScene,
    Truth,
    check_size,
    plate_text,
    write_scene,
)

CAR_COLORS = ((60, 60, 160), (150, 90, 40), (40, 40, 40), (190, 190, 190), (50, 120, 60))  # BGR
LIGHTING_DROP = 0.72  # a cloud: the scene falls to 72 % brightness within half a second


@dataclass(frozen=True)
class GatePlate(Plate):
    """A plate on a car that drives in at `vx` from `x_in` (frame `t_in`), stops at the barrier from
    frame `stop` to frame `go`, then drives on at the same speed."""

    t_in: int = 0
    x_in: float = 0.0
    stop: int = 0
    go: int = 0

    def center(self, frame: int) -> tuple[float, float]:
        moved = min(frame, self.stop) - self.t_in + max(0, frame - self.go)
        return self.x_in + self.vx * moved, self.y0


@dataclass(frozen=True)
class Car:
    """A car body that drives in, waits at the barrier and drives out; its plate (with the plate's
    truth window) moves with it."""

    plate: Plate
    first: int  # first frame any of the car is in view
    last: int  # last frame (inclusive)
    width: int
    height: int
    color: tuple[int, int, int]

    def center(self, frame: int) -> tuple[float, float]:
        x, y = self.plate.center(frame)
        return x, y - self.height * 0.22  # the plate sits low on the body


class GateScene(SampleScene):
    """`seconds` of a gate camera at `fps`: cars every `gap_s` seconds (uniform range) between passes."""

    def __init__(
        self,
        seconds: float = 600.0,
        fps: float = 5.0,
        seed: int = 11,
        size: tuple[int, int] = (640, 480),
        gap_s: tuple[float, float] = (40.0, 100.0),
    ) -> None:
        super().__init__(frames=0, seed=seed, size=size)  # background and noise stream; no plates
        self.frames = max(1, round(seconds * fps))
        self.fps = fps
        rng = np.random.default_rng([seed, 16])
        self.cars = self._plan_cars(rng, gap_s)
        self.plates = [c.plate for c in self.cars]
        self.lighting_changes = self._plan_lighting()
        self.tree = (int(self.width * 0.86), int(self.height * 0.2), int(self.height * 0.12))

    def _plan_cars(self, rng: np.random.Generator, gap_s: tuple[float, float]) -> list[Car]:
        cars: list[Car] = []
        t = float(rng.uniform(gap_s[0] * 0.3, gap_s[0])) * self.fps  # the video opens on an empty scene
        while True:
            car = self._car(rng, int(t))
            if car.last >= self.frames:
                break
            cars.append(car)
            t = car.last + 1 + float(rng.uniform(*gap_s)) * self.fps
        return cars

    def _car(self, rng: np.random.Generator, first: int) -> Car:
        cv2 = self.cv2
        text = plate_text(rng)
        font = cv2.FONT_HERSHEY_SIMPLEX if rng.random() < 0.5 else cv2.FONT_HERSHEY_DUPLEX
        thickness = int(rng.integers(2, 4))
        (_, h1), _ = cv2.getTextSize(text, font, 1.0, thickness)
        scale = float(rng.uniform(30.0, 38.0)) / h1
        (tw, th), _ = cv2.getTextSize(text, font, scale, thickness)
        plate_w, plate_h = tw + th * 0.8, th * 1.9
        width, height = int(plate_w * 1.5), int(plate_h * 3.2)
        direction = 1 if rng.random() < 0.5 else -1
        speed = float(rng.uniform(140.0, 200.0)) / self.fps  # frame pixels per frame
        x_in = -width / 2 if direction > 0 else self.width + width / 2
        x_stop = self.width / 2 + float(rng.uniform(-60.0, 60.0))
        drive_in = math.ceil(abs(x_stop - x_in) / speed)
        stop = first + drive_in
        go = stop + round(float(rng.uniform(2.0, 6.0)) * self.fps)  # waits at the barrier
        drive_out = math.ceil((self.width + width - abs(x_stop - x_in)) / speed) + 1
        y = self.height * float(rng.uniform(0.62, 0.72))
        angle = float(rng.uniform(-2.0, 2.0))
        color = PLATE_COLORS[int(rng.integers(len(PLATE_COLORS)))]
        vx = direction * abs(x_stop - x_in) / drive_in
        plate = GatePlate(
            text,
            font,
            scale,
            thickness,
            color,
            angle,
            first,
            first + 1,
            x_in,
            y,
            vx,
            0.0,
            first,
            x_in,
            stop,
            go,
        )
        last = go + drive_out
        # The truth window: the frames where the whole plate is in view (a cut-off plate cannot be read).
        visible = [f for f in range(first, last + 1) if self._inside(plate, f)]
        plate = dataclasses.replace(plate, start=visible[0], end=visible[-1] + 1)
        body = CAR_COLORS[int(rng.integers(len(CAR_COLORS)))]
        return Car(plate, first, last, width, height, body)

    def _inside(self, p: Plate, frame: int) -> bool:
        _, _, quad, _ = self._geometry(p, frame)
        return bool((quad[:, 0] >= 2).all() and (quad[:, 0] <= self.width - 3).all())

    def _plan_lighting(self) -> list[int]:
        """A sudden change in the middle of every other long car-free gap (never during a pass)."""
        edges = [0] + [x for c in self.cars for x in (c.first, c.last)] + [self.frames - 1]
        gaps = [(a, b) for a, b in zip(edges[::2], edges[1::2], strict=True) if b - a > 6 * self.fps]
        return [(a + b) // 2 for i, (a, b) in enumerate(gaps) if i % 2 == 0 or len(gaps) == 1]

    def gain(self, frame: int) -> float:
        """Scene brightness: a slow drift (a few % over minutes) times the cloud cover (toggled at each
        lighting change, ramping over half a second)."""
        t = frame / self.fps
        drift = 1.0 + 0.06 * math.sin(2 * math.pi * t / 240.0)
        cover = 1.0
        ramp = max(1.0, 0.5 * self.fps)
        for i, start in enumerate(self.lighting_changes):
            if frame >= start:
                done = min(1.0, (frame - start + 1) / ramp)
                target = LIGHTING_DROP if i % 2 == 0 else 1.0
                cover = cover + (target - cover) * done
        return drift * cover

    def masks(self) -> dict[str, list[list[int]]]:
        """Where the tree sways and the clock ticks, as polygons in frame pixels."""
        x, y, r = self.tree
        m = r + 28
        return {
            "tree": [[x - m, y - m], [x + m, y - m], [x + m, y + m], [x - m, y + m]],
            "clock": [[0, 0], [204, 0], [204, 28], [0, 28]],
        }

    def render(self, frame: int) -> np.ndarray:
        cv2 = self.cv2
        img = self.background.copy()
        x, y, r = self.tree
        sway = round(22 * math.sin(2 * math.pi * frame / (1.6 * self.fps)))
        cv2.ellipse(img, (x + sway, y), (r, int(r * 0.8)), 0, 0, 360, (40, 90, 45), -1)
        cv2.ellipse(img, (x - sway // 2, y + r // 3), (r // 2, r // 3), 0, 0, 360, (30, 70, 35), -1)
        for car in self.cars:
            if car.first <= frame <= car.last:
                cx, cy = car.center(frame)
                x1, y1 = int(cx - car.width / 2), int(cy - car.height / 2)
                cv2.rectangle(img, (x1, y1), (x1 + car.width, y1 + car.height), car.color, -1)
                shade = tuple(int(c * 0.5) for c in car.color)
                cv2.rectangle(img, (x1 + 8, y1 + 6), (x1 + car.width - 8, y1 + car.height // 4), shade, -1)
                img = self.draw_plate(img, car.plate, frame)
        img = np.clip(img.astype(np.float32) * self.gain(frame), 0, 255).astype(np.uint8)
        # The camera's clock is burned in after exposure, so the lighting does not touch it.
        secs = int(frame / self.fps)
        stamp = f"2026-06-01 08:{secs // 60 % 60:02d}:{secs % 60:02d}"
        cv2.rectangle(img, (0, 0), (200, 25), (0, 0, 0), -1)
        cv2.putText(img, stamp, (6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
        return self.finish(img, frame)

    def passes(self) -> list[dict[str, Any]]:
        return [{"text": c.plate.text, "first": c.plate.start, "last": c.plate.end - 1} for c in self.cars]


def make_gate_sample(
    path: str | Path,
    seconds: float = 600.0,
    fps: float = 5.0,
    seed: int = 11,
    size: tuple[int, int] = (640, 480),
    gap_s: tuple[float, float] = (40.0, 100.0),
    codec: Codec = "mp4v",
) -> Truth:
    """Write the gate video and its sidecar (the video path with .json); return the per-frame truth."""
    check_size(size)
    scene = GateScene(seconds, fps, seed, size, gap_s)
    extra = {
        "scene": "gate",
        "passes": scene.passes(),
        "lighting_changes": scene.lighting_changes,
        "masks": scene.masks(),
    }
    return write_scene(scene, path, fps, codec, extra=extra)
