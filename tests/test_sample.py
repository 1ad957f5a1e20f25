"""The demo plate video: deterministic, complete, with truth that matches the pixels."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edged.demo.sample import SampleScene, make_sample
from edged.demo.truth import read_video

REPO = Path(__file__).resolve().parent.parent
SMALL = (320, 240)


def test_same_seed_same_video_and_truth(tmp_path: Path) -> None:
    a = make_sample(tmp_path / "a.mp4", frames=6, seed=3, size=SMALL)
    b = make_sample(tmp_path / "b.mp4", frames=6, seed=3, size=SMALL)
    c = make_sample(tmp_path / "c.mp4", frames=6, seed=4, size=SMALL)
    assert a == b and a != c
    fa, fb = read_video(tmp_path / "a.mp4")[0], read_video(tmp_path / "b.mp4")[0]
    assert fa.tobytes() == fb.tobytes()
    assert read_video(tmp_path / "c.mp4")[0].tobytes() != fa.tobytes()


def test_writes_n_frames_and_sidecar(tmp_path: Path) -> None:
    truth = make_sample(tmp_path / "v.mp4", frames=9, seed=1, size=SMALL, fps=15)
    frames = read_video(tmp_path / "v.mp4")
    assert len(frames) == 9 and frames[0].shape == (240, 320, 3)
    meta = json.loads((tmp_path / "v.json").read_text())
    assert meta["frames"] == 9 and meta["fps"] == 15 and meta["size"] == [320, 240] and meta["seed"] == 1
    assert meta["truth"] == truth and len(truth) == 9


def test_mjpeg_avi(tmp_path: Path) -> None:
    make_sample(tmp_path / "v.avi", frames=4, size=SMALL, codec="mjpg")
    cap = cv2.VideoCapture(str(tmp_path / "v.avi"))
    fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode()
    cap.release()
    assert fourcc == "MJPG"
    assert len(read_video(tmp_path / "v.avi")) == 4


@pytest.mark.parametrize(("codec", "name"), [("h264", "h264"), ("h265", "hevc")])
def test_camera_codecs_through_ffmpeg(tmp_path: Path, codec: str, name: str) -> None:
    """H.264/H.265 as cameras send them: the right codec, no B-frames, every frame, close to the render."""
    path = tmp_path / f"v-{codec}.mp4"
    make_sample(path, frames=8, seed=1, size=SMALL, fps=10, codec=codec)  # type: ignore[arg-type]
    probe = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-count_frames",
            "-show_entries",
            "stream=codec_name,nb_read_frames,has_b_frames,pix_fmt",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    stream = json.loads(probe.stdout)["streams"][0]
    assert stream["codec_name"] == name and stream["pix_fmt"] == "yuv420p"
    assert int(stream["nb_read_frames"]) == 8 and int(stream.get("has_b_frames", 0)) == 0
    frames = read_video(path)
    rendered = SampleScene(8, 1, SMALL).render(3)
    assert len(frames) == 8 and np.abs(frames[3].astype(int) - rendered.astype(int)).mean() < 6


def test_default_scene_has_variety() -> None:
    scene = SampleScene(frames=150, seed=7, size=(640, 480))
    counts = [len(scene.truth(i)) for i in range(150)]
    assert {0, 1, 2} <= set(counts)
    texts = {p.text for p in scene.plates}
    assert len(texts) >= 6
    assert all(re.fullmatch(r"[A-Z0-9][A-Z0-9 -]{4,6}[A-Z0-9]", t) for t in texts)
    assert len({p.font for p in scene.plates}) == 3
    assert all(abs(p.angle) <= 4.0 for p in scene.plates)


def test_truth_polygons_cover_the_text() -> None:
    scene = SampleScene(frames=60, seed=7, size=(640, 480))
    for i in (5, 30, 55):
        img = cv2.cvtColor(scene.render(i), cv2.COLOR_BGR2GRAY)
        for item in scene.truth(i):
            quad = np.array(item["polygon"], dtype=np.float32)
            assert (quad >= 0).all() and (quad[:, 0] < 640).all() and (quad[:, 1] < 480).all()
            mask = np.zeros(img.shape, np.uint8)
            cv2.fillConvexPoly(mask, quad.astype(np.int32), 255)
            inside = img[mask > 0]
            # black strokes on a light plate: both must be there
            assert (inside < 60).mean() > 0.1 and (inside > 150).mean() > 0.3
            (_, _), (w, h), _ = cv2.minAreaRect(quad)
            assert min(w, h) >= 28  # PP-OCR needs tall enough text


def test_ppocr_reads_the_plates(tmp_path: Path) -> None:
    rapidocr = pytest.importorskip("rapidocr")
    truth = make_sample(tmp_path / "v.mp4", frames=40, seed=7)
    frames = read_video(tmp_path / "v.mp4")
    ocr = rapidocr.RapidOCR(params={"Global.log_level": "error"})
    picked = [i for i in range(40) if truth[i]][::12][:3]
    assert picked
    for i in picked:
        res = ocr(frames[i])
        assert sorted(res.txts or []) == sorted(t["text"] for t in truth[i]), f"frame {i}"


def test_cli_writes_files_and_rejects_bad_size(tmp_path: Path) -> None:
    out = tmp_path / "clip.avi"
    run = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts/make_sample.py"),
            "--out",
            str(out),
            "--frames",
            "3",
            "--size",
            "320x240",
            "--codec",
            "mjpg",
            "--seed",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert len(read_video(out)) == 3
    assert json.loads(out.with_suffix(".json").read_text())["seed"] == 2
    bad = subprocess.run(
        [sys.executable, str(REPO / "scripts/make_sample.py"), "--size", "big"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "size must look like 640x480, not 'big'" in bad.stderr
