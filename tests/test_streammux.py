"""Frame-level cross-camera batching (FrameBatcher) on the real PP-OCR models, ONNX Runtime CPU, 2-3
small streams: each camera gets its own frames back, in order; a failed batch fails only its frames;
a lone camera waits at most max_wait_ms for company; the daemon wires it from `batching`."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pytest

from edged.chain.chain import Chain
from edged.chain.pipeline import Pipeline
from edged.chain.streammux import FrameBatcher
from edged.chain.tracker import IouTracker
from edged.config import load_config
from edged.infer.base import Engine
from edged.infer.batching import padded_rows
from edged.metrics import Metrics
from edged.models import get_decoder
from edged.preprocess import CpuPreprocessor, PreprocessSpec
from edged.runtime import CameraRunner, load_model
from edged.types import Frame, FrameResult
from tests._chain import SpyEngine, make_stage, reads_by_frame, run_cameras, text_frame
from tests._edged import det_model, small_sample


def batcher_for(
    det: Engine, max_batch: int, max_wait_ms: float, spec: PreprocessSpec | None = None, **kw: object
) -> FrameBatcher:
    st = make_stage("ppocr_det", "det", det)
    return FrameBatcher(
        "det",
        det,
        st.decoder,
        spec or st.spec,
        CpuPreprocessor(),
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        **kw,  # type: ignore[arg-type]
    )


def camera_pipeline(name: str, det: Engine, rec: Engine, batcher: FrameBatcher, sink: object) -> Pipeline:
    chain = Chain(
        [
            make_stage("ppocr_det", "det", det, tracker=IouTracker()),
            make_stage("ppocr_rec", "rec", rec, on="det"),
        ]
    )
    return Pipeline(chain, sink, name=name, batcher=batcher)  # type: ignore[arg-type]


@pytest.mark.parametrize("decode_workers", [0, 2])
def test_frames_of_several_cameras_batch_into_one_call_and_come_back_to_their_camera(
    ocr_engines: dict[str, Engine],
    decode_workers: int,
) -> None:
    spy = SpyEngine(ocr_engines["ppocr_det"])
    waits: list[tuple[int, float]] = []
    mux = batcher_for(
        spy,
        4,
        300,
        pad_to_max=True,
        on_batch=lambda n, w: waits.append((n, w)),
        decode_workers=decode_workers,
    )
    cameras = {"north": "AB", "south": "XY", "east": "KM"}
    frames_each = 3
    results: dict[str, list[FrameResult]] = {c: [] for c in cameras}
    pipes = {c: camera_pipeline(c, spy, ocr_engines["ppocr_rec"], mux, results[c].append) for c in cameras}
    run_cameras(pipes, lambda cam, seq: text_frame(cameras[cam], seq), frames_each)
    mux.close()

    for cam, prefix in cameras.items():
        got = reads_by_frame(results[cam])
        assert got == [(s, [f"{prefix}{s}"]) for s in range(frames_each)], (cam, got)
        # The camera's own tracker saw its frames: one track, the same id on every frame.
        ids = {d.attrs["track_id"] for r in results[cam] for d in r.detections}
        assert len(ids) == 1, (cam, ids)
    assert spy.calls and set(spy.calls) == {4}, f"every engine call is padded to max_batch: {spy.calls}"
    assert max(n for n, _ in waits) > 1, f"no two cameras' frames shared a batch: {waits}"
    assert sum(n for n, _ in waits) == len(cameras) * frames_each == mux.frames
    assert len(spy.calls) == mux.batches < len(cameras) * frames_each


def test_a_failed_batch_fails_only_its_frames_and_the_cameras_go_on(
    ocr_engines: dict[str, Engine],
) -> None:
    spy = SpyEngine(ocr_engines["ppocr_det"], fail_on_call=1)
    mux = batcher_for(spy, 2, 50)
    failed: list[tuple[str, int, str]] = []
    results: list[FrameResult] = []
    chain = Chain(
        [
            make_stage("ppocr_det", "det", spy),
            make_stage("ppocr_rec", "rec", ocr_engines["ppocr_rec"], on="det"),
        ]
    )
    pipe = Pipeline(
        chain,
        results.append,
        name="gate",
        batcher=mux,
        on_error=lambda f, e: failed.append((f.camera, f.seq, str(e))),
    )
    pipe.start()
    for seq in range(3):
        assert pipe.submit(Frame("gate", seq, text_frame("QR", seq)), timeout=60)
        time.sleep(0.2)  # one frame per batch: only the first call fails
    assert pipe.stop(120)
    mux.close()
    assert failed == [("gate", 0, "engine failure injected by the test")]
    assert [r.frame.seq for r in results] == [1, 2]
    assert [k.label for d in results[0].detections for k in d.children["rec"]] == ["QR1"]
    assert pipe.in_flight == 0


def test_a_lone_camera_waits_at_most_max_wait_for_others(
    ocr_engines: dict[str, Engine],
) -> None:
    waits: list[float] = []
    mux = batcher_for(ocr_engines["ppocr_det"], 8, 40, on_batch=lambda n, w: waits.append(w))
    done: list[FrameResult] = []
    st = make_stage("ppocr_det", "det", ocr_engines["ppocr_det"])
    pipe = Pipeline(Chain([st]), done.append, name="solo", batcher=mux)
    pipe.start()
    for seq in range(4):
        assert pipe.submit(Frame("solo", seq, text_frame("W", seq)), timeout=60)
    assert pipe.stop(120)
    mux.close()
    assert [r.frame.seq for r in done] == [0, 1, 2, 3]
    # Each batch starts once the oldest frame waited max_wait (40 ms) and nobody joined; the margin
    # covers the batch thread's own scheduling, not a second wait.
    assert waits and all(w < 0.040 + 0.030 for w in waits), waits


def test_config_batching_puts_cameras_that_start_with_the_model_behind_one_batcher(tmp_path: Path) -> None:
    video = small_sample(tmp_path, frames=6)
    det = {**det_model(), "batching": {"max_batch": 2, "max_wait_ms": 100, "decode_workers": 1}}
    cfg_file = tmp_path / "edged.yaml"
    cams = {
        c: {"source": f"file://{video}", "realtime": False, "chain": [{"model": "det"}]} for c in ("a", "b")
    }
    cfg_file.write_text(
        json.dumps(
            {
                "mqtt": {"enabled": False},
                "health": {"enabled": False},
                "models": {"det": det},
                "cameras": cams,
            }
        )
    )
    cfg = load_config(cfg_file, env={})
    metrics = Metrics()
    lm = load_model("det", cfg.models["det"], metrics)
    assert (
        isinstance(lm.batcher, FrameBatcher) and lm.batcher.max_batch == 2 and lm.batcher.decode_workers == 1
    )
    got: dict[str, list[int]] = {"a": [], "b": []}
    runners = [
        CameraRunner(
            c, cfg.cameras[c], {"det": lm}, lambda r: got[r.frame.camera].append(r.frame.seq), metrics
        )
        for c in cams
    ]
    for r in runners:
        r.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and min(len(v) for v in got.values()) < 6:
        time.sleep(0.1)
    for r in runners:
        r.stop()
    lm.close()
    assert got == {"a": list(range(6)), "b": list(range(6))}
    assert lm.batcher.frames == 12
    rows = metrics.registry.get_sample_value("edged_batch_rows_sum", {"model": "det"})
    assert rows == 12


@pytest.mark.parametrize("pad", [False, True])
def test_padded_batch_sizes(ocr_engines: dict[str, Engine], pad: bool) -> None:
    mux = batcher_for(ocr_engines["ppocr_det"], 8, 1, pad_to_max=pad)
    try:
        assert [padded_rows(mux.sizes, n) for n in (1, 3, 5, 8)] == ([8, 8, 8, 8] if pad else [1, 4, 8, 8])
    finally:
        mux.close()


def test_a_slow_camera_does_not_hold_back_the_others(
    ocr_engines: dict[str, Engine],
) -> None:
    """The slow camera's sink takes 0.5 s a frame: its own submits block (its capture would drop to
    the latest frame), while the fast camera's frames keep flowing through the shared batcher."""
    small = dataclasses.replace(get_decoder("ppocr_det").default_preprocess, limit_side=320, limit_type="max")
    mux = batcher_for(
        ocr_engines["ppocr_det"], 2, 20, small
    )  # ~320x256 input: a few tens of ms a frame on a CPU
    done: dict[str, list[float]] = {"fast": [], "slow": []}
    t0 = time.monotonic()

    def sink_for(cam: str, delay: float):  # type: ignore[no-untyped-def]
        def sink(r: FrameResult) -> None:
            time.sleep(delay)
            done[cam].append(time.monotonic() - t0)

        return sink

    pipes = {
        cam: Pipeline(
            Chain([make_stage("ppocr_det", "det", ocr_engines["ppocr_det"])]),
            sink_for(cam, d),
            name=cam,
            batcher=mux,
        )
        for cam, d in (("fast", 0.0), ("slow", 0.5))
    }
    run_cameras(pipes, lambda cam, seq: text_frame(cam[:2].upper(), seq), 6)
    mux.close()
    assert len(done["fast"]) == len(done["slow"]) == 6
    assert done["slow"][-1] >= 3.0  # six half-second sinks, one after another
    assert done["fast"][-1] < done["slow"][-1] / 2, done


def test_a_frame_the_batcher_cannot_take_fails_alone(
    ocr_engines: dict[str, Engine],
) -> None:
    mux = batcher_for(ocr_engines["ppocr_det"], 2, 10)
    failed: list[tuple[int, str]] = []
    done: list[FrameResult] = []
    pipe = Pipeline(
        Chain([make_stage("ppocr_det", "det", ocr_engines["ppocr_det"])]),
        done.append,
        name="gate",
        batcher=mux,
        on_error=lambda f, e: failed.append((f.seq, str(e))),
    )
    pipe.start()
    assert pipe.submit(Frame("gate", 0, np.zeros((0, 0, 3), np.uint8)), timeout=10)  # an empty image
    assert pipe.submit(Frame("gate", 1, text_frame("OK", 1)), timeout=10)
    assert pipe.stop(60)
    mux.close()
    assert failed == [(0, "empty image 0x0")]
    assert [r.frame.seq for r in done] == [1] and pipe.in_flight == 0
    assert not pipe.submit(
        Frame("gate", 2, text_frame("OK", 2)), timeout=1
    )  # closed: refused, not lost silently
