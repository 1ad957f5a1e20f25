"""int8 versions of the bundled PP-OCR det and rec models (ONNX Runtime static QDQ quantization), and
how they read compared with the float models.

Calibration data comes from the sample video through edged's own preprocessing: whole frames for the
detector (at the size the demo config gives it), the ground-truth plate crops for the recognizer.
Every `--calib-step`-th frame calibrates; all frames are then read by the float chain and by the int8
chain (det -> rec, configs/edged.yaml's settings) and compared with the truth and with each other.

    python scripts/quantize_models.py                      # models/*.int8.onnx + the comparison
    python scripts/quantize_models.py --eval-only --int8 text_det   # int8 det + float rec vs float

Needs the `onnx` package (a dev dependency); edged itself only loads the resulting .onnx files (with
`models.<name>.onnxruntime.int8: true`). The int8 files go beside the float ones (edged.infer.quantize.int8_path).
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edged.config import load_config  # noqa: E402
from edged.demo.truth import read_video, result_texts, sample_truth  # noqa: E402
from edged.infer.quantize import int8_path, quantize_qdq  # noqa: E402
from edged.pipeline.flow import run_frames  # noqa: E402
from edged.pipeline.runner import build_stages  # noqa: E402
from edged.preprocess.spec import upright_quad  # noqa: E402
from edged.serving.loading import LoadedModel, load_model  # noqa: E402
from edged.types import Frame  # noqa: E402


class TimedEngine:
    """Delegates to the real engine and adds up the CPU time (all threads) of its calls."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self.cpu_s = 0.0
        self.name, self.inputs, self.outputs = engine.name, engine.inputs, engine.outputs
        self.metadata, self.info = engine.metadata, engine.info

    def infer(self, inputs: Any) -> Any:
        t0 = time.process_time()
        out = self._engine.infer(inputs)
        self.cpu_s += time.process_time() - t0
        return out

    def close(self) -> None:
        self._engine.close()


def calibration(models: dict[str, LoadedModel], frames: list[np.ndarray], truth: list[Any]) -> dict[str, Any]:
    det, rec = models["text_det"], models["text_rec"]
    det_in: list[np.ndarray] = []
    rec_in: list[np.ndarray] = []
    for i, img in enumerate(frames):
        f = Frame("calib", i, img)
        det_in.append(det.preprocessor.frame(f, det.spec)[0])
        for plate in truth[i]:
            quad = upright_quad(np.asarray(plate["polygon"], np.float32), rotate_tall=True)
            rec_in.append(rec.preprocessor.crops(f, [quad], rec.spec)[0])
    return {"text_det": det_in, "text_rec": rec_in}


def read_all(cfg: Any, frames: list[np.ndarray], int8: set[str]) -> tuple[list[list[str]], dict[str, float]]:
    """Texts per frame through the det -> rec chain, and seconds per frame spent in each engine."""
    models = {}
    for name, m in cfg.models.items():
        ort = m.onnxruntime.model_copy(update={"int8": name in int8})
        models[name] = load_model(name, m.model_copy(update={"onnxruntime": ort}))
    timed = {name: TimedEngine(lm.engine) for name, lm in models.items()}
    for name, lm in models.items():
        lm.server.engine = timed[name]  # type: ignore[assignment]  # the server is the engine's one caller
    stages = build_stages(next(iter(cfg.cameras.values())), models)
    results, _ = run_frames("eval", stages, (Frame("eval", i, img) for i, img in enumerate(frames)))
    out = [result_texts(r) for r in results]
    return out, {k: v.cpu_s / len(frames) for k, v in timed.items()}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=str(ROOT / "configs/edged.yaml"))
    ap.add_argument("--video", default=str(ROOT / "samples/plates.mp4"))
    ap.add_argument("--calib-step", type=int, default=5, help="calibrate on every n-th frame")
    ap.add_argument("--eval-only", action="store_true")
    ap.add_argument(
        "--int8", default="text_det,text_rec", help="models whose int8 version the second chain uses"
    )
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = load_config(a.config, env={})
    frames = read_video(a.video)
    truth_texts = sample_truth(a.video, len(frames))
    if not a.eval_only:
        import json

        truth = json.loads(Path(a.video).with_suffix(".json").read_text())["truth"]
        models = {n: load_model(n, m) for n, m in cfg.models.items()}
        picked = list(range(0, len(frames), a.calib_step))
        calib = calibration(models, [frames[i] for i in picked], [truth[i] for i in picked])
        for name, lm in models.items():
            t0 = time.perf_counter()
            quantize_qdq(lm.config.path, int8_path(lm.config.path), lm.engine.inputs[0].name, calib[name])
            print(
                f"{name}: {int8_path(lm.config.path).name} from {len(calib[name])} calibration inputs "
                f"in {time.perf_counter() - t0:.0f} s",
                flush=True,
            )
            lm.close()
    swapped = set(a.int8.split(","))
    fp, fp_t = read_all(cfg, frames, int8=set())
    q, q_t = read_all(cfg, frames, int8=swapped)
    with_text = [i for i in range(len(frames)) if truth_texts[i]]
    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}; "
        f"{Path(a.video).name}: {len(frames)} frames ({len(with_text)} with plates)"
    )
    print("| models | exact frames | det ms CPU/frame | rec ms CPU/frame |\n|---|---|---|---|")
    for label, reads, t in (("float32", fp, fp_t), (f"int8 QDQ: {a.int8}", q, q_t)):
        exact = sum(reads[i] == truth_texts[i] for i in with_text)
        print(
            f"| {label} | {exact}/{len(with_text)} | {t['text_det'] * 1000:.0f} | {t['text_rec'] * 1000:.0f} |"
        )
    same = sum(fp[i] == q[i] for i in range(len(frames)))
    print(f"frames where int8 reads the same strings as float: {same}/{len(frames)}")
    for i in range(len(frames)):
        if fp[i] != q[i]:
            print(f"  frame {i}: float {fp[i]} int8 {q[i]} truth {truth_texts[i]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
