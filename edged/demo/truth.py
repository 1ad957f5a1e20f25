"""Reading a sample video back: its frames, its ground truth, and what a chain's result read.

`make_sample` (sample.py) writes the truth beside the video as JSON; `sample_truth` reads it per frame
and `result_texts` gives what a `FrameResult` read in the same shape, so the benchmarks
(scripts/bench_*.py), scripts/quantize_models.py and the tests compare the two. Pure functions over
files; the daemon never imports them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from edged.types import Detection, FrameResult


def read_video(path: str | Path, limit: int | None = None) -> list[np.ndarray]:
    """Decode a video file's frames (up to `limit`) as BGR images. Raises RuntimeError if it won't open."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise RuntimeError(f"OpenCV cannot open {path}")
    frames: list[np.ndarray] = []
    try:
        while limit is None or len(frames) < limit:
            ok, img = cap.read()
            if not ok:
                break
            frames.append(img)
    finally:
        cap.release()
    return frames


def result_texts(result: FrameResult) -> list[str]:
    """Every label the later stages read under a frame's detections, sorted (what an OCR chain read)."""
    return sorted(k.label for d in result.detections for kids in d.children.values() for k in kids if k.label)


def sample_truth(video: str | Path, frames: int) -> list[list[str]]:
    """The sorted plate texts of each of the first `frames` frames, from the `.json` that make_sample
    writes beside the video; empty lists when there is none."""
    truth_file = Path(video).with_suffix(".json")
    truth = json.loads(truth_file.read_text())["truth"] if truth_file.exists() else []
    return [sorted(p["text"] for p in truth[i]) if i < len(truth) else [] for i in range(frames)]


def detection_from_dict(d: dict[str, Any], parent: Detection | None = None) -> Detection:
    """A Detection back from its `to_dict()` form (recorded chain outputs); a child without geometry
    shares its parent's, as `to_dict` omits it."""
    box = tuple(d["box"]) if "box" in d else (parent.box if parent is not None else (0.0, 0.0, 0.0, 0.0))
    polygon = [tuple(p) for p in d["polygon"]] if "polygon" in d else None
    if "box" not in d and parent is not None:
        polygon = parent.polygon
    det = Detection(
        d["label"],
        float(d["score"]),
        box,
        int(d.get("class_id", -1)),
        polygon,
        dict(d.get("attrs", {})),  # type: ignore[arg-type]
    )
    det.children = {k: [detection_from_dict(c, det) for c in v] for k, v in d.get("children", {}).items()}
    return det
