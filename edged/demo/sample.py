"""The demo video: license-plate-like text moving over a noisy background, with per-frame ground truth.

Deterministic for a given seed (numpy's PCG64 drives every random choice), so the demo, the tests and
benchmarks all see the same frames. Rendering is tuned so PP-OCR reads the plates: text at least 30 px
tall, Hershey SIMPLEX/DUPLEX/TRIPLEX, rotation within ±4°, mild noise and blur.

    truth = make_sample("samples/plates.mp4")          # also writes samples/plates.json
    truth[i] -> [{"text": "KX 4471", "polygon": [[x, y] * 4], "plate": [[x, y] * 4]}, ...]
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

log = logging.getLogger(__name__)

Codec = Literal["mp4v", "mjpg", "h264", "h265"]
CODECS: tuple[Codec, ...] = ("mp4v", "mjpg", "h264", "h265")
# What IP cameras send: a constant-ish bit rate (4 Mbit/s at 1080p, scaled by pixels), a key frame every
# 2 s, no B-frames (cameras encode for latency), 4:2:0. Encoded by the ffmpeg program (Debian's ffmpeg).
FFMPEG_CODECS: dict[str, list[str]] = {
    "h264": ["-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency", "-profile:v", "high"],
    "h265": ["-c:v", "libx265", "-preset", "veryfast", "-tune", "zerolatency", "-tag:v", "hvc1"],
}

# Letters as on many real plates: no I, O or Q (they read as 1/0 on plates, so registries skip them).
LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"
DIGITS = "0123456789"
# L = letter, N = digit; spaces and dashes are kept as written.
PATTERNS = ("LL NNNN", "LLNN LLL", "L-NNN-LL", "NNN LLL", "LL-NNNN", "LLL NNN", "NN-LLL-N", "LLL-NNNN")
FONT_NAMES = ("SIMPLEX", "DUPLEX", "TRIPLEX")
PLATE_COLORS = ((245, 245, 245), (40, 205, 250))  # BGR: white, yellow
Truth = list[list[dict[str, Any]]]


@dataclass(frozen=True)
class Plate:
    """One plate's life in the video: what it says, how it looks and where it moves."""

    text: str
    font: int
    scale: float
    thickness: int
    color: tuple[int, int, int]
    angle: float
    start: int
    end: int  # exclusive
    x0: float
    y0: float
    vx: float
    vy: float

    def center(self, frame: int) -> tuple[float, float]:
        t = frame - self.start
        return self.x0 + self.vx * t, self.y0 + self.vy * t


def plate_text(rng: np.random.Generator) -> str:
    pattern = PATTERNS[int(rng.integers(len(PATTERNS)))]
    out = []
    for ch in pattern:
        if ch == "L":
            out.append(LETTERS[int(rng.integers(len(LETTERS)))])
        elif ch == "N":
            out.append(DIGITS[int(rng.integers(len(DIGITS)))])
        else:
            out.append(ch)
    return "".join(out)


class SampleScene:
    """Plans the plates for `frames` frames and renders any frame on demand."""

    def __init__(self, frames: int = 150, seed: int = 7, size: tuple[int, int] = (640, 480)) -> None:
        import cv2

        self.cv2 = cv2
        self.frames = frames
        self.width, self.height = size
        self.seed = seed
        rng = np.random.default_rng(seed)
        self.background = self._background(rng)
        self.plates = self._plan(rng)
        # Per-frame noise comes from its own stream so rendering frame i never depends on frame i-1.
        self._noise_seed = int(rng.integers(2**31))

    def _background(self, rng: np.random.Generator) -> np.ndarray:
        cv2 = self.cv2
        w, h = self.width, self.height
        # Mostly grey with a faint colour cast, like asphalt and walls in a car park.
        gray = rng.integers(60, 150, size=(h // 24 + 1, w // 24 + 1, 1)).astype(np.float32)
        tint = rng.normal(0.0, 8.0, size=(h // 24 + 1, w // 24 + 1, 3)).astype(np.float32)
        bg = cv2.resize(gray + tint, (w, h), interpolation=cv2.INTER_CUBIC)
        bg += rng.normal(0.0, 10.0, size=(h, w, 1)).astype(np.float32)  # grain
        bg = cv2.GaussianBlur(bg, (3, 3), 0.8)
        # A few darker and lighter stripes and blobs: edges for the detector to ignore.
        for _ in range(6):
            y = int(rng.integers(0, h))
            cv2.line(bg, (0, y), (w, y + int(rng.integers(-60, 60))), (float(rng.integers(30, 200)),) * 3, 3)
        for _ in range(5):
            c = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.circle(bg, c, int(rng.integers(10, 45)), (float(rng.integers(40, 180)),) * 3, -1)
        return np.clip(bg, 0, 255).astype(np.uint8)

    def _plan(self, rng: np.random.Generator) -> list[Plate]:
        plates: list[Plate] = []
        t = int(rng.integers(0, 6))  # the video may start with an empty frame or two
        lane = 0
        while t < self.frames:
            duration = int(rng.integers(16, 30))
            plates.append(self._plate(rng, t, duration, lane))
            if rng.random() < 0.4:  # sometimes a second plate at the same time, in the other lane
                offset = int(rng.integers(0, 10))
                plates.append(self._plate(rng, t + offset, duration - offset, 1 - lane))
            lane = 1 - lane
            t += duration + (int(rng.integers(6, 14)) if rng.random() < 0.5 else 0)
        return [p for p in plates if p.start < self.frames]

    def _plate(self, rng: np.random.Generator, start: int, duration: int, lane: int) -> Plate:
        cv2 = self.cv2
        text = plate_text(rng)
        font = getattr(cv2, f"FONT_HERSHEY_{FONT_NAMES[int(rng.integers(len(FONT_NAMES)))]}")
        thickness = int(rng.integers(2, 4))
        # Scale the font so the capital height lands in 30..40 px.
        (_, h1), _ = cv2.getTextSize(text, font, 1.0, thickness)
        scale = float(rng.uniform(30.0, 40.0)) / h1
        (tw, th), _ = cv2.getTextSize(text, font, scale, thickness)
        pw = tw + th * 0.8
        angle = float(rng.uniform(-4.0, 4.0))
        half_w = pw / 2 + 6
        band_top = self.height * (0.08 + 0.5 * lane)
        band = self.height * 0.4
        y0 = band_top + band / 2 + float(rng.uniform(-band / 5, band / 5))
        span = self.width - 2 * half_w
        direction = 1 if rng.random() < 0.5 else -1
        travel = min(span, float(rng.uniform(2.0, 5.0)) * duration)
        x_start = half_w + float(rng.uniform(0, span - travel))
        if direction < 0:
            x_start += travel
        vx = direction * travel / max(duration - 1, 1)
        vy = float(rng.uniform(-0.4, 0.4))
        color = PLATE_COLORS[int(rng.integers(len(PLATE_COLORS)))]
        return Plate(text, font, scale, thickness, color, angle, start, start + duration, x_start, y0, vx, vy)

    def _geometry(self, p: Plate, frame: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
        """(affine plate→frame, text quad, plate quad, text origin) for plate `p` at `frame`."""
        cv2 = self.cv2
        (tw, th), _ = cv2.getTextSize(p.text, p.font, p.scale, p.thickness)
        pad_x, pad_y = th * 0.4, th * 0.45
        pw, ph = tw + 2 * pad_x, th + 2 * pad_y
        cx, cy = p.center(frame)
        m = cv2.getRotationMatrix2D((pw / 2, ph / 2), p.angle, 1.0)
        m[0, 2] += cx - pw / 2
        m[1, 2] += cy - ph / 2
        # The text box: cap height plus a little margin, as a text detector would outline it.
        text_box = np.array(
            [
                [pad_x - 2, pad_y - 3],
                [pad_x + tw + 2, pad_y - 3],
                [pad_x + tw + 2, pad_y + th + 3],
                [pad_x - 2, pad_y + th + 3],
            ],
            dtype=np.float64,
        )
        plate_box = np.array([[0, 0], [pw, 0], [pw, ph], [0, ph]], dtype=np.float64)
        origin = (round(pad_x), round(pad_y + th))
        return m, text_box @ m[:, :2].T + m[:, 2], plate_box @ m[:, :2].T + m[:, 2], origin

    def truth(self, frame: int) -> list[dict[str, Any]]:
        out = []
        for p in self.plates:
            if p.start <= frame < p.end:
                _, text_quad, plate_quad, _ = self._geometry(p, frame)
                out.append(
                    {
                        "text": p.text,
                        "polygon": [[round(float(x), 1), round(float(y), 1)] for x, y in text_quad],
                        "plate": [[round(float(x), 1), round(float(y), 1)] for x, y in plate_quad],
                    }
                )
        return out

    def render(self, frame: int) -> np.ndarray:
        img = self.background.copy()
        for p in self.plates:
            if p.start <= frame < p.end:
                img = self.draw_plate(img, p, frame)
        return self.finish(img, frame)

    def draw_plate(self, img: np.ndarray, p: Plate, frame: int) -> np.ndarray:
        """`img` with plate `p` drawn where it is at `frame` (anti-aliased edges)."""
        cv2 = self.cv2
        m, _, _, origin = self._geometry(p, frame)
        (tw, th), _ = cv2.getTextSize(p.text, p.font, p.scale, p.thickness)
        pw, ph = math.ceil(tw + th * 0.8), math.ceil(th * 1.9)
        patch = np.empty((ph, pw, 3), dtype=np.uint8)
        patch[:] = p.color
        cv2.rectangle(patch, (1, 1), (pw - 2, ph - 2), (20, 20, 20), 2)
        cv2.putText(patch, p.text, origin, p.font, p.scale, (10, 10, 10), p.thickness, cv2.LINE_AA)
        mask = np.full((ph, pw), 255, dtype=np.uint8)
        size = (img.shape[1], img.shape[0])
        warped = cv2.warpAffine(patch, m, size, flags=cv2.INTER_LINEAR)
        alpha = cv2.warpAffine(mask, m, size, flags=cv2.INTER_LINEAR).astype(np.float32)[..., None] / 255.0
        return (img * (1.0 - alpha) + warped * alpha).astype(np.uint8)  # type: ignore[no-any-return]

    def finish(self, img: np.ndarray, frame: int) -> np.ndarray:
        """Sensor noise and a little blur, the same for a given (seed, frame)."""
        cv2 = self.cv2
        rng = np.random.default_rng([self._noise_seed, frame])
        noisy = img.astype(np.float32) + rng.normal(0.0, 3.0, size=img.shape).astype(np.float32)
        return cv2.GaussianBlur(np.clip(noisy, 0, 255).astype(np.uint8), (3, 3), 0.7)  # type: ignore[no-any-return]


def make_sample(
    path: str | Path,
    frames: int = 150,
    seed: int = 7,
    size: tuple[int, int] = (640, 480),
    fps: float = 15.0,
    codec: Codec = "mp4v",
    truth_path: str | Path | None = None,
) -> Truth:
    """Write the plate video (and its truth as JSON, default: the video path with .json); return the truth.

    codec "mp4v" writes MPEG-4 Part 2 (any FFmpeg OpenCV reads it); "mjpg" writes Motion-JPEG, which
    OpenCV builds without FFmpeg can still read from an .avi; "h264" and "h265" write what IP cameras
    send (see `FFMPEG_CODECS`), through the ffmpeg program.
    """
    check_size(size)
    return write_scene(SampleScene(frames, seed, size), path, fps, codec, truth_path)


def check_size(size: tuple[int, int]) -> None:
    if size[0] < 320 or size[1] < 240:
        raise ValueError(f"sample size {size[0]}x{size[1]} is too small for the plates (at least 320x240)")


def write_scene(
    scene: SampleScene,
    path: str | Path,
    fps: float,
    codec: Codec = "mp4v",
    truth_path: str | Path | None = None,
    extra: dict[str, Any] | None = None,
) -> Truth:
    """Render every frame of `scene` into a video and its truth into the JSON sidecar (plus `extra` keys)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    size = (scene.width, scene.height)
    writer = (
        FfmpegWriter(path, codec, fps, size)
        if codec in FFMPEG_CODECS
        else OpenCvWriter(path, codec, fps, size)
    )
    truth: Truth = []
    try:
        for i in range(scene.frames):
            writer.write(scene.render(i))
            truth.append(scene.truth(i))
    finally:
        writer.close()
    meta = {
        "video": path.name,
        "frames": scene.frames,
        "fps": fps,
        "size": list(size),
        "seed": scene.seed,
        **(extra or {}),
        "truth": truth,
    }
    out = Path(truth_path) if truth_path is not None else path.with_suffix(".json")
    out.write_text(json.dumps(meta, separators=(",", ":")) + "\n")
    log.info("wrote %s (%d frames, %d plates) and %s", path, scene.frames, len(scene.plates), out)
    return truth


class OpenCvWriter:
    """MPEG-4 Part 2 or Motion-JPEG through cv2.VideoWriter."""

    def __init__(self, path: Path, codec: str, fps: float, size: tuple[int, int]) -> None:
        import cv2

        fourcc = cv2.VideoWriter.fourcc(*("MJPG" if codec == "mjpg" else "mp4v"))
        self._w = cv2.VideoWriter(str(path), fourcc, float(fps), size)
        if not self._w.isOpened():
            raise RuntimeError(f"OpenCV cannot write {path} with codec {codec}")
        if codec == "mjpg":
            self._w.set(cv2.VIDEOWRITER_PROP_QUALITY, 90)

    def write(self, bgr: np.ndarray) -> None:
        self._w.write(bgr)

    def close(self) -> None:
        self._w.release()


class FfmpegWriter:
    """H.264 / H.265 as a camera sends it: BGR frames piped into the ffmpeg program."""

    def __init__(self, path: Path, codec: str, fps: float, size: tuple[int, int]) -> None:
        exe = shutil.which("ffmpeg")
        if exe is None:
            raise RuntimeError(f"codec {codec} needs the ffmpeg program (apt-get install ffmpeg)")
        w, h = size
        kbps = max(500, round(4000 * w * h / (1920 * 1080)))
        gop = max(1, round(2 * fps))
        cmd = [exe, "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", "bgr24"]
        cmd += ["-s", f"{w}x{h}", "-r", f"{fps:g}", "-i", "-", *FFMPEG_CODECS[codec], "-pix_fmt", "yuv420p"]
        cmd += [
            "-b:v",
            f"{kbps}k",
            "-maxrate",
            f"{kbps}k",
            "-bufsize",
            f"{2 * kbps}k",
            "-g",
            str(gop),
            "-bf",
            "0",
        ]
        self._path = path
        self._p = subprocess.Popen([*cmd, str(path)], stdin=subprocess.PIPE, stderr=subprocess.PIPE)

    def write(self, bgr: np.ndarray) -> None:
        assert self._p.stdin is not None
        self._p.stdin.write(np.ascontiguousarray(bgr).tobytes())

    def close(self) -> None:
        assert self._p.stdin is not None
        self._p.stdin.close()
        err = self._p.stderr.read().decode(errors="replace") if self._p.stderr else ""
        if self._p.wait() != 0:
            raise RuntimeError(
                f"ffmpeg could not write {self._path}: {err.strip() or 'exit ' + str(self._p.returncode)}"
            )
