"""Model servers on the real PP-OCR models (ONNX Runtime, CPU): one owner per model, batching across
cameras for every stage, fixed shapes, order per camera, failures that stay alone, draining shutdown."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edged.config.loader import load_config
from edged.decoders.registry import build_decoder, get_decoder
from edged.infer.base import Engine, ModelLoadError
from edged.observability.metrics import Metrics
from edged.pipeline.dispatch import FrameDispatcher
from edged.pipeline.runner import CameraRunner
from edged.pipeline.tracker import IouTracker
from edged.preprocess.cpu import CpuPreprocessor
from edged.serving.loading import load_model
from edged.serving.queue import ServerClosed
from edged.serving.server import ModelServer
from edged.serving.shapes import declare_shapes
from edged.types import Frame, FrameResult
from tests.support.chain import (
    DELIVERY,
    Camera,
    SpyEngine,
    frame_text,
    make_stage,
    reads_by_frame,
    run_cameras,
    serve,
    spy_of,
    text_frame,
)
from tests.support.edged import det_model, small_sample

CAMERAS = {"north": "AB", "south": "XY", "east": "KM"}


def det_rec_cameras(det: ModelServer, rec: ModelServer, names: list[str]) -> dict[str, Camera]:
    return {
        c: Camera(c, [make_stage("det", det, tracker=IouTracker()), make_stage("rec", rec, on="det")])
        for c in names
    }


@pytest.mark.parametrize("decode_workers", [0, 2])
def test_cameras_share_batches_of_every_stage_and_get_their_own_results_back(
    ocr_engines: dict[str, Engine], decode_workers: int
) -> None:
    det = serve("ppocr_det", ocr_engines["ppocr_det"], max_wait_ms=300, decode_workers=decode_workers)
    rec = serve("ppocr_rec", ocr_engines["ppocr_rec"], max_wait_ms=300)
    cams = det_rec_cameras(det, rec, list(CAMERAS))
    frames_each = 3
    try:
        run_cameras(cams, lambda cam, seq: text_frame(CAMERAS[cam], seq), frames_each)
    finally:
        det.close()
        rec.close()
    for cam, prefix in CAMERAS.items():
        got = reads_by_frame(cams[cam].results)
        assert got == [(s, [frame_text(prefix, s)]) for s in range(frames_each)], (cam, got)
        ids = {d.attrs["track_id"] for r in cams[cam].results for d in r.detections}
        assert len(ids) == 1, (cam, ids)  # the camera's own tracker saw only its frames
    total = len(CAMERAS) * frames_each
    for server in (det, rec):
        spy = spy_of(server)
        assert max(spy.calls) > 1, f"{server.name}: no two cameras shared a call: {spy.calls}"
        assert server.batches == len(spy.calls) < total
        assert server.rows == total  # one row per frame (det) or per crop (rec, one text line each)
        declared = set(server.shapes.input_shapes(server.spec))
        assert set(spy.shapes) <= declared, f"{server.name}: undeclared shapes {set(spy.shapes) - declared}"


def test_batched_cameras_read_exactly_what_one_unbatched_camera_reads(ocr_engines: dict[str, Engine]) -> None:
    """Rows are planned alone (a crop's width bucket depends on the crop only), so who shares a batch
    cannot change a read: the same frames through max_batch 1 and through 3 batched cameras."""
    images = [text_frame(p, s) for p in CAMERAS.values() for s in range(2)]
    images += [
        np.ascontiguousarray(np.hstack([a, b])) for a, b in zip(images[::2], images[1::2], strict=True)
    ]
    solo_det = serve("ppocr_det", ocr_engines["ppocr_det"], max_batch=1)
    solo_rec = serve("ppocr_rec", ocr_engines["ppocr_rec"], max_batch=1)
    try:
        (solo,) = det_rec_cameras(solo_det, solo_rec, ["solo"]).values()
        alone = reads_by_frame(solo.run(images))
    finally:
        solo_det.close()
        solo_rec.close()
    det = serve("ppocr_det", ocr_engines["ppocr_det"], max_wait_ms=300)
    rec = serve("ppocr_rec", ocr_engines["ppocr_rec"], max_wait_ms=300)
    cams = det_rec_cameras(det, rec, ["a", "b", "c"])
    try:
        run_cameras(cams, lambda cam, seq: images[seq], len(images))
    finally:
        det.close()
        rec.close()
    assert max(spy_of(rec).calls) > 1 and max(spy_of(det).calls) > 1
    assert all(texts for _, texts in alone), alone
    for name, cam in cams.items():
        assert reads_by_frame(cam.results) == alone, name


def test_a_request_that_breaks_the_engine_fails_alone(ocr_engines: dict[str, Engine]) -> None:
    """The engine fails on any batch holding a black frame: that batch is retried request by request,
    so only the black frame fails and the other camera's frame in the same batch is read."""
    spy = SpyEngine(ocr_engines["ppocr_det"])
    det = serve("ppocr_det", spy, max_wait_ms=500)
    spy.fail_when = lambda t: bool((np.asarray(t).reshape(len(t), -1) == -1.0).all(axis=1).any())
    rec = serve("ppocr_rec", ocr_engines["ppocr_rec"])
    cams = det_rec_cameras(det, rec, ["good", "bad"])
    black = np.zeros((240, 320, 3), np.uint8)
    try:
        run_cameras(cams, lambda cam, seq: black if cam == "bad" else text_frame("OK", seq), 1)
    finally:
        det.close()
        rec.close()
    assert spy.calls[0] == 2, spy.calls  # both frames went in one batch first
    assert reads_by_frame(cams["good"].results) == [(0, [frame_text("OK", 0)])]
    assert [(s, str(e)) for s, e in cams["bad"].failed] == [(0, "engine failure injected by the test")]
    assert cams["bad"].results == [] and cams["good"].failed == []


def test_a_frame_the_server_cannot_take_fails_alone_and_a_closed_server_refuses(
    ocr_engines: dict[str, Engine],
) -> None:
    det = serve("ppocr_det", ocr_engines["ppocr_det"])
    cam = Camera("gate", [make_stage("det", det)])
    got = cam.run([np.zeros((0, 0, 3), np.uint8), text_frame("OK", 1)])
    assert [(s, str(e)) for s, e in cam.failed] == [(0, "empty image 0x0")]
    assert [r.frame.seq for r in got] == [1] and cam.chain.in_flight == 0
    det.close()
    with pytest.raises(ServerClosed):
        det.submit_frame(Frame("gate", 2, text_frame("OK", 2)), lambda rows, err: None)


class StagingFails(CpuPreprocessor):
    """A preprocessor whose ahead-of-time staging fails (as a GPU one would with no page-locked
    memory left); its real work (CPU preprocessing) is untouched."""

    def stage(self, frame: Frame) -> None:
        raise MemoryError("no page-locked memory left")


def test_a_frame_that_cannot_be_staged_is_still_read_and_the_failure_logged_once(
    ocr_engines: dict[str, Engine], caplog: pytest.LogCaptureFixture
) -> None:
    det = serve("ppocr_det", ocr_engines["ppocr_det"], preprocessor=StagingFails())
    rec = serve("ppocr_rec", ocr_engines["ppocr_rec"])
    cam = det_rec_cameras(det, rec, ["gate"])["gate"]
    try:
        got = cam.run([text_frame("OK", 0), text_frame("OK", 1)])
    finally:
        det.close()
        rec.close()
    assert (
        reads_by_frame(got) == [(0, [frame_text("OK", 0)]), (1, [frame_text("OK", 1)])] and cam.failed == []
    )
    warned = [r for r in caplog.records if "staging a frame failed" in r.getMessage()]
    assert len(warned) == 1 and "no page-locked memory left" in warned[0].getMessage()


def test_close_serves_what_is_queued_first(ocr_engines: dict[str, Engine]) -> None:
    det = serve("ppocr_det", ocr_engines["ppocr_det"], max_batch=1)
    answers: list[tuple[int, str | None]] = []
    lock = threading.Lock()

    def answer(seq: int):  # type: ignore[no-untyped-def]
        def deliver(rows: list | None, err: BaseException | None) -> None:
            with lock:
                answers.append((seq, None if err else rows[0][0].label if rows and rows[0] else ""))

        return deliver

    for seq in range(4):
        det.submit_frame(Frame("cam", seq, text_frame("Q", seq)), answer(seq))
    det.close(timeout=120)
    assert [s for s, _ in answers] == [0, 1, 2, 3]  # all four answered, in order, none with an error
    assert all(label == "text" for _, label in answers), answers


def test_a_lone_camera_is_never_held_back_waiting_for_others(ocr_engines: dict[str, Engine]) -> None:
    waits: list[float] = []
    det = serve(
        "ppocr_det",
        ocr_engines["ppocr_det"],
        max_batch=8,
        max_wait_ms=500,
        on_batch=lambda n, p, w: waits.append(w),
    )
    cam = Camera("solo", [make_stage("det", det)])
    try:
        got = cam.run([text_frame("W", s) for s in range(4)])
    finally:
        det.close()
    assert [r.frame.seq for r in got] == [0, 1, 2, 3]
    # Only one camera is attached, and every batch already holds it: no 500 ms wait for nobody.
    assert waits and max(waits) < 0.25, waits


def test_a_slow_camera_does_not_hold_back_the_others(ocr_engines: dict[str, Engine]) -> None:
    """The slow camera's sink takes 0.5 s a frame: only its own frames wait (its capture would drop to
    the newest frame); the fast camera's frames keep flowing through the shared server."""
    # ~320x256 input: a few tens of ms a frame on a CPU
    small = dataclasses.replace(get_decoder("ppocr_det").default_preprocess, limit_side=320, limit_type="max")
    det = serve("ppocr_det", ocr_engines["ppocr_det"], max_batch=2, max_wait_ms=20, spec=small)
    done: dict[str, list[float]] = {"fast": [], "slow": []}
    t0 = time.monotonic()
    cams = {c: Camera(c, [make_stage("det", det)]) for c in done}

    def slow_sink(r: FrameResult) -> None:
        time.sleep(0.5)
        done["slow"].append(time.monotonic() - t0)

    cams["slow"].chain.sink = slow_sink
    cams["fast"].chain.sink = lambda r: done["fast"].append(time.monotonic() - t0)
    try:
        run_cameras(cams, lambda cam, seq: text_frame(cam[:2].upper(), seq), 6)
    finally:
        det.close()
    assert len(done["fast"]) == len(done["slow"]) == 6
    assert done["slow"][-1] >= 3.0  # six half-second sinks, one after another
    assert done["fast"][-1] < done["slow"][-1] / 2, done


def test_config_wires_cameras_to_one_server_per_model(tmp_path: Path) -> None:
    video = small_sample(tmp_path, frames=6)
    det = {**det_model(), "batching": {"max_batch": 2, "max_wait_ms": 100, "decode_workers": 1}}
    cams = {
        c: {"source": f"file://{video}", "realtime": False, "chain": [{"model": "det"}]} for c in ("a", "b")
    }
    cfg_file = tmp_path / "edged.yaml"
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
    lm = load_model("det", cfg.models["det"], metrics, source_sizes=[(640, 480)])
    assert lm.shapes.rows == (1, 2) and lm.server.status()["decode_workers"] == 1
    # ONNX Runtime on the CPU pays nothing for a new shape: one call at load, every shape usable.
    warm = lm.server.status()["warm"]
    assert warm["finished"] and not warm["every_shape"] and warm["done"] == 1, warm
    assert lm.server.warmer.usable == lm.shapes
    got: dict[str, list[int]] = {"a": [], "b": []}
    dispatcher = FrameDispatcher()
    forgotten: list[tuple[str, int]] = []  # (camera, its frames in flight then)
    lm.server.preprocessor = ForgetRecorder(lambda c: forgotten.append((c, by_name[c].chain.in_flight)))
    runners = [
        CameraRunner(
            c,
            cfg.cameras[c],
            {"det": lm},
            lambda r: got[r.frame.camera].append(r.frame.seq),
            metrics,
            dispatcher,
            DELIVERY,
        )
        for c in cams
    ]
    by_name = {r.name: r for r in runners}
    for r in runners:
        r.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and min(len(v) for v in got.values()) < 6:
        time.sleep(0.1)
    for r in runners:
        r.stop()
    dispatcher.stop()
    lm.close()
    assert got == {"a": list(range(6)), "b": list(range(6))}
    assert lm.server.rows == 12
    assert metrics.registry.get_sample_value("edged_batch_rows_sum", {"model": "det"}) == 12
    threads = {t.name for t in threading.enumerate()}
    assert not any(n.startswith(("a-", "b-")) for n in threads)  # no per-camera chain threads
    assert forgotten == [("a", 0), ("b", 0)]  # each stopped camera's buffers freed once, after it drained


class ForgetRecorder(CpuPreprocessor):
    """CPU preprocessing that reports `forget` calls (a GPU preprocessor frees a camera's frame buffers
    there; the GPU test is tests/gpu/test_kernel.py::test_forget_frees_a_stopped_cameras_frame_buffers)."""

    def __init__(self, on_forget: Callable[[str], None]) -> None:
        self.on_forget = on_forget

    def forget(self, camera: str) -> None:
        self.on_forget(camera)


def test_shapes_the_model_cannot_take_are_one_clear_load_error(tmp_path: Path) -> None:
    """A line model exported with a fixed batch (1) and width (200): its fixed dims become the declared
    shapes; widths the config asks for beyond them are one clear error naming the setting."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 200])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=0)], "fixed", [x], [y]
    )
    path = tmp_path / "fixed.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    cfg_file = tmp_path / "edged.yaml"

    def model_config(**batching: object) -> object:
        model = {
            "path": str(path),
            "kind": "classifier",
            "preprocess": {"resize": "fixed_height", "size": [200, 32]},
            "batching": {"max_batch": 4, **batching},
        }
        cfg_file.write_text(
            json.dumps({"mqtt": {"enabled": False}, "models": {"line": model}, "cameras": {}})
        )
        return load_config(cfg_file, env={}).models["line"]

    lm = load_model("line", model_config())  # type: ignore[arg-type]
    assert lm.shapes.rows == (1,) and lm.shapes.sizes == ((200, 32),)
    lm.close()
    with pytest.raises(
        ModelLoadError, match=r"models\.line\.batching: declared input \[1, 3, 32, 100\].*must be 200"
    ):
        load_model("line", model_config(widths=[100, 200]))  # type: ignore[arg-type]


@pytest.mark.parametrize("decode_workers", [0, 2])
def test_outputs_the_decoder_cannot_read_fail_the_load_not_every_frame(
    ocr_engines: dict[str, Engine], decode_workers: int
) -> None:
    """Decoding is warmed at load on one row of real warm-up outputs (in every decode worker when there
    are some), so a model whose outputs do not fit its kind fails there, once, with the reason."""
    spec = get_decoder("classifier").default_preprocess
    shapes = declare_shapes(spec, max_batch=1, pad_to_max=False, source_sizes=(), widths=())
    decoder = build_decoder("classifier", {})
    server = ModelServer(  # the text detector's [N, 1, H, W] map is no [N, classes] score vector
        "wrong",
        SpyEngine(ocr_engines["ppocr_det"]),  # closing the server must not close the shared engine
        decoder,
        spec,
        CpuPreprocessor(),
        shapes,
        decode_workers=decode_workers,
    )
    try:
        with pytest.raises(RuntimeError, match="the classifier decoder cannot decode its outputs"):
            server.start()
    finally:
        server.close()


def test_a_batch_runs_as_whole_row_buckets_when_padding_would_waste_more(
    ocr_engines: dict[str, Engine],
) -> None:
    """9 cameras' frames at once, row buckets 1/2/4/8/16: 8 run now and 1 right after, instead of one
    call padded with 7 zero rows; every camera still gets its own frame's boxes."""
    spy = SpyEngine(ocr_engines["ppocr_det"])
    det = serve("ppocr_det", spy, max_batch=16, max_wait_ms=500)
    got: dict[str, list[Any]] = {}
    done = threading.Event()
    cams = [f"cam{i}" for i in range(9)]
    for cam in cams:
        det.attach(cam)

    def deliver(cam: str):  # type: ignore[no-untyped-def]
        def take(rows: list | None, err: BaseException | None) -> None:
            got[cam] = rows[0] if rows else [err]
            if len(got) == len(cams):
                done.set()

        return take

    try:
        for i, cam in enumerate(cams):
            det.submit_frame(Frame(cam, 0, text_frame("AB", i)), deliver(cam))
        assert done.wait(60)
    finally:
        det.close()
    assert spy.calls == [8, 1] and det.padded == 0
    assert all(len(boxes) == 1 and boxes[0].label == "text" for boxes in got.values()), got


def test_warm_ups_beside_the_serving_engine_run_one_at_a_time(tmp_path: Path) -> None:
    """A finished build and a live update's candidate are warmed from two threads on one swap lane
    (its pooled buffers): the server runs them one after the other, never interleaved."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [-1, 3, 32, 64])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [-1, 3])
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=0)], "line", [x], [y]
    )
    path = tmp_path / "line.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    model = {
        "path": str(path),
        "kind": "classifier",
        "preprocess": {"resize": "fixed_height", "size": [64, 32]},
        "batching": {"max_batch": 4},
    }
    cfg_file = tmp_path / "edged.yaml"
    cfg_file.write_text(json.dumps({"mqtt": {"enabled": False}, "models": {"line": model}, "cameras": {}}))
    lm = load_model("line", load_config(cfg_file, env={}).models["line"])
    active, most = [0], [0]
    lock = threading.Lock()

    class Overlap(SpyEngine):
        def infer(self, inputs: Any) -> dict[str, Any]:
            with lock:
                active[0] += 1
                most[0] = max(most[0], active[0])
            time.sleep(0.02)  # long enough for the other thread's call to land inside this one
            try:
                return super().infer(inputs)
            finally:
                with lock:
                    active[0] -= 1

    try:
        engines = [Overlap(lm.engine), Overlap(lm.engine)]
        threads = [threading.Thread(target=lm.server.warmer.run, kwargs={"engine": e}) for e in engines]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        declared = len(lm.shapes.rows) * len(lm.shapes.sizes)
        assert [len(e.calls) for e in engines] == [declared, declared]  # both warmed every shape
        assert most[0] == 1
    finally:
        lm.close()
