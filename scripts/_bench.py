"""What the benchmarks share: the engines-only rate of a det -> rec chain at the shapes the model servers
use, measured with nothing else around the engine calls (preprocessing and decoding run untimed). Each
call is the server's own (edged.serving.outputs.run_engine: the same reductions and downloads)."""

from __future__ import annotations

import contextlib
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from edged.preprocess.spec import Plan, upright_quad
from edged.serving.loading import LoadedModel
from edged.serving.outputs import run_engine
from edged.serving.shapes import crop_plan, frame_plan
from edged.types import Frame


@contextlib.contextmanager
def gpu_context(model: LoadedModel) -> Iterator[None]:
    """The CUDA context current in this thread while a model with a GPU lane runs, as the model
    server's batch thread holds it."""
    if model.lane is None:
        yield
        return
    from edged.gpu.context import gpu_thread

    with gpu_thread():
        yield


def _timed_call(model: LoadedModel, items: list[tuple[Frame, Plan]]) -> tuple[float, dict[str, np.ndarray]]:
    """One engine call as the model server makes it (preprocessing, reductions and downloads on the
    server's own GPU lane, where its engine runs too; outputs reduced on the device where the decoder
    can, downloaded into page-locked memory), timed from the engine call to the host outputs."""
    rows = model.shapes.rows_for(len(items))
    tensor = model.preprocessor.rows(items, model.spec, rows, model.lane)
    name = model.engine.inputs[0].name
    sync = getattr(tensor, "stream", None)
    if sync is not None:
        sync.synchronize()  # preprocessing finished before the clock starts
    buffers = _buffers(model)
    t0 = time.perf_counter()
    out = run_engine(model.engine, model.decoder, {name: tensor}, len(items), buffers, model.lane)
    host = out.wait()
    seconds = time.perf_counter() - t0
    kept = {k: np.array(v) for k, v in host.items()}  # the buffers are reused after release
    out.release()
    return seconds, kept


_host_buffers: dict[str, Any] = {}


def _buffers(model: LoadedModel) -> Any:
    if model.lane is None:
        return None
    from edged.gpu.transfer import HostBuffers

    return _host_buffers.setdefault(model.name, HostBuffers())


def engines_only(
    det: LoadedModel, rec: LoadedModel | None, frames: Sequence[np.ndarray], det_rows: int = 1
) -> tuple[float, dict[str, Any]]:
    """Seconds of engine calls alone for all frames: det in batches of `det_rows` frames, then every
    crop of every frame through rec in batches of the server's largest row bucket, grouped by width
    bucket (as the server groups them). Returns (seconds, details)."""
    total = 0.0
    crops: dict[tuple[int, int], list[tuple[Frame, Plan]]] = defaultdict(list)
    det_calls = rec_calls = 0
    with gpu_context(det):
        for start in range(0, len(frames), det_rows):
            chunk = [Frame("bench", start + i, img) for i, img in enumerate(frames[start : start + det_rows])]
            plans = [frame_plan(det.shapes, det.spec, f.width, f.height) for f in chunk]
            seconds, out = _timed_call(det, list(zip(chunk, plans, strict=True)))
            total += seconds
            det_calls += 1
            if rec is None:
                continue
            for frame, found in zip(chunk, det.decoder.decode(out, plans), strict=True):
                for d in found:
                    p = crop_plan(rec.shapes, rec.spec, upright_quad(d.quad()))
                    crops[(p.out_w, p.out_h)].append((frame, p))
    if rec is not None:
        with gpu_context(rec):
            for items in crops.values():
                step = rec.shapes.max_rows
                for start in range(0, len(items), step):
                    seconds, _ = _timed_call(rec, items[start : start + step])
                    total += seconds
                    rec_calls += 1
    n_crops = sum(len(v) for v in crops.values())
    return total, {"det_calls": det_calls, "rec_calls": rec_calls, "crops": n_crops}
