"""int8 and fp16 versions of the bundled PP-OCR det and rec models, and how they read compared with the
float models.

int8 (ONNX Runtime static QDQ quantization, for CPUs): calibration data comes from the sample video
through edged's own preprocessing: whole frames for the detector (at the size the demo config gives it),
the ground-truth plate crops for the recognizer. Every `--calib-step`-th frame calibrates.

fp16 (`--fp16`, for ONNX Runtime's CUDA provider): float16 weights and activations except the spatial
means, float32 inputs and outputs (edged.infer.quantize.convert_fp16); no calibration. Its speed-up is a
GPU one: here the comparison runs on the CPU provider, which only checks that the conversion reads the
same strings (on a CPU the fp16 model is slower than the float one).

Then all frames are read by the float chain and by the chain with the new versions (det -> rec,
configs/edged.yaml's settings) and compared with the truth and with each other.

    python scripts/quantize_models.py                      # models/*.int8.onnx + the comparison
    python scripts/quantize_models.py --eval-only --int8 text_det   # int8 det + float rec vs float
    python scripts/quantize_models.py --fp16               # models/<det>.fp16.onnx + the comparison
    python scripts/quantize_models.py --fp16 text_det,text_rec      # fp16 versions of both

Needs the `onnx` package (a dev dependency); edged itself only loads the resulting .onnx files (with
`models.<name>.onnxruntime.int8: true` or `.fp16: true`). The files go beside the float ones
(edged.infer.quantize.int8_path, fp16_path).
"""

from __future__ import annotations

import argparse
import json
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

from edged.config.loader import load_config  # noqa: E402
from edged.demo.truth import read_video, result_texts, sample_truth  # noqa: E402
from edged.infer.quantize import convert_fp16, fp16_path, int8_path, quantize_qdq  # noqa: E402
from edged.pipeline.chain import run_frames  # noqa: E402
from edged.pipeline.stage import build_stages  # noqa: E402
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


def read_all(
    cfg: Any, frames: list[np.ndarray], version: str, swapped: set[str]
) -> tuple[list[list[str]], dict[str, float]]:
    """Texts per frame through the det -> rec chain, with the `version` ("int8", "fp16") of the models in
    `swapped` and the float ones of the others, and seconds per frame spent in each engine."""
    models = {}
    for name, m in cfg.models.items():
        ort = m.onnxruntime.model_copy(update={version: name in swapped})
        models[name] = load_model(name, m.model_copy(update={"onnxruntime": ort}))
    timed = {name: TimedEngine(lm.engine) for name, lm in models.items()}
    for name, lm in models.items():
        lm.slot.wrap(lambda _e, t=timed[name]: t)  # type: ignore[misc]  # the server is the engine's one caller
    stages = build_stages(next(iter(cfg.cameras.values())), models)
    results, _ = run_frames("eval", stages, (Frame("eval", i, img) for i, img in enumerate(frames)))
    out = [result_texts(r) for r in results]
    return out, {k: v.cpu_s / len(frames) for k, v in timed.items()}


def make_int8(cfg: Any, video: str, frames: list[np.ndarray], calib_step: int) -> None:
    """models/*.int8.onnx for every configured model, calibrated on every `calib_step`-th frame."""
    truth = json.loads(Path(video).with_suffix(".json").read_text())["truth"]
    models = {n: load_model(n, m) for n, m in cfg.models.items()}
    picked = list(range(0, len(frames), calib_step))
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


def make_fp16(cfg: Any, names: set[str]) -> None:
    """models/<stem>.fp16.onnx for the models in `names`."""
    for name in sorted(names):
        src = cfg.models[name].path
        t0 = time.perf_counter()
        convert_fp16(src, fp16_path(src))
        size = fp16_path(src).stat().st_size / src.stat().st_size
        print(
            f"{name}: {fp16_path(src).name} in {time.perf_counter() - t0:.1f} s ({size:.0%} of the float file)",
            flush=True,
        )


def compare(
    cfg: Any, video: str, frames: list[np.ndarray], version: str, swapped: set[str], label: str
) -> None:
    """Reads of the float chain and of the chain with `swapped` models' `version`, against the truth."""
    truth_texts = sample_truth(video, len(frames))
    fp, fp_t = read_all(cfg, frames, version, set())
    q, q_t = read_all(cfg, frames, version, swapped)
    with_text = [i for i in range(len(frames)) if truth_texts[i]]
    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}; "
        f"{Path(video).name}: {len(frames)} frames ({len(with_text)} with plates)"
    )
    print("| models | exact frames | det ms CPU/frame | rec ms CPU/frame |\n|---|---|---|---|")
    for row, reads, t in (("float32", fp, fp_t), (f"{label}: {','.join(sorted(swapped))}", q, q_t)):
        exact = sum(reads[i] == truth_texts[i] for i in with_text)
        print(
            f"| {row} | {exact}/{len(with_text)} | {t['text_det'] * 1000:.0f} | {t['text_rec'] * 1000:.0f} |"
        )
    same = sum(fp[i] == q[i] for i in range(len(frames)))
    print(f"frames where {version} reads the same strings as float: {same}/{len(frames)}")
    for i in range(len(frames)):
        if fp[i] != q[i]:
            print(f"  frame {i}: float {fp[i]} {version} {q[i]} truth {truth_texts[i]}")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=str(ROOT / "configs/edged.yaml"))
    ap.add_argument("--video", default=str(ROOT / "samples/plates.mp4"))
    ap.add_argument("--calib-step", type=int, default=5, help="int8: calibrate on every n-th frame")
    ap.add_argument("--eval-only", action="store_true", help="compare the versions already made")
    ap.add_argument(
        "--int8", default="text_det,text_rec", help="models whose int8 version the second chain uses"
    )
    ap.add_argument(
        "--fp16",
        nargs="?",
        const="text_det",
        metavar="MODELS",
        help="make (and compare) the fp16 versions of these models instead of int8 ones (default: text_det)",
    )
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    cfg = load_config(a.config, env={})
    frames = read_video(a.video)
    if a.fp16 is not None:
        version, swapped, label = "fp16", set(a.fp16.split(",")), "fp16 (CPU provider)"
        if unknown := swapped - set(cfg.models):
            ap.error(f"--fp16: no model {', '.join(sorted(unknown))} in {a.config}")
        if not a.eval_only:
            make_fp16(cfg, swapped)
    else:
        version, swapped, label = "int8", set(a.int8.split(",")), "int8 QDQ"
        if not a.eval_only:
            make_int8(cfg, a.video, frames, a.calib_step)
    compare(cfg, a.video, frames, version, swapped, label)
    return 0


if __name__ == "__main__":
    sys.exit(main())
