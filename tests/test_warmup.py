"""Staged warm-up (issue 28, item 4): a model server serves after one shape every request fits, warms
the other declared shapes between batches, and never runs a batch in a shape before it was warmed.

The plan (edged.serving.warmup.StagedWarmUp) is pure logic; the server test runs the real PP-OCR
recognizer on ONNX Runtime with `warm_every_shape` (what a GPU backend gets; ONNX Runtime on the CPU
would need no per-shape warm-up) and a spy that records the input shape of every engine call.
"""

from __future__ import annotations

import dataclasses
import threading

import numpy as np

from edged.infer.base import Engine
from edged.serving.shapes import ShapeSet, crop_plan, frame_plan
from edged.serving.warmup import StagedWarmUp
from tests.support.chain import SpyEngine, serve, spy_of, text_frame

SIZES = ((320, 48), (640, 48), (2048, 48))


def run_plan(plan: StagedWarmUp, fail: tuple[int, tuple[int, int]] | None = None) -> list[ShapeSet]:
    seen = []
    while (step := plan.next()) is not None:
        plan.record(step, "boom" if step == fail else None)
        seen.append(plan.usable)
    return seen


def test_first_stage_is_one_shape_every_request_fits_then_sizes_then_row_buckets() -> None:
    plan = StagedWarmUp(ShapeSet((1, 2, 4), SIZES))
    assert plan.first() == [(1, (2048, 48))] and not plan.ready
    plan.record((1, (2048, 48)))
    assert plan.ready and plan.usable == ShapeSet((1,), ((2048, 48),))
    usable = run_plan(plan)
    # each size joins at one row as it is warmed; a row bucket only once it is warm at every size
    assert usable[0] == ShapeSet((1,), ((320, 48), (2048, 48)))
    assert usable[1] == ShapeSet((1,), SIZES)
    assert [u.rows for u in usable[2:]] == [(1,)] * 2 + [(1, 2)] + [(1, 2)] * 2 + [(1, 2, 4)]
    assert plan.finished and plan.usable == ShapeSet((1, 2, 4), SIZES) and plan.progress() == "9/9"


def test_a_shape_that_fails_to_warm_is_never_used() -> None:
    plan = StagedWarmUp(ShapeSet((1, 2), SIZES))
    plan.record(plan.first()[0])
    run_plan(plan, fail=(2, (640, 48)))
    assert plan.usable == ShapeSet((1,), SIZES)  # the 2-row bucket is not warm at every size
    assert plan.failed == [((2, (640, 48)), "boom")]


def test_an_engine_without_per_shape_costs_runs_one_call_and_uses_every_shape() -> None:
    shapes = ShapeSet((1, 2, 4), SIZES)
    plan = StagedWarmUp(shapes, every_shape=False)
    assert plan.first() == [(1, (320, 48))] and plan.usable == shapes and plan.ready
    plan.record(plan.first()[0])
    assert plan.finished and plan.progress() == "1/1"


def test_requests_are_planned_into_the_warm_shapes_only() -> None:
    from edged.decoders.registry import get_decoder

    spec = get_decoder("ppocr_rec").default_preprocess
    only_widest = ShapeSet((1,), ((2048, 48),))
    quad = np.array([[0, 0], [100, 0], [100, 30], [0, 30]], np.float32)
    assert (crop_plan(only_widest, spec, quad).out_w, crop_plan(only_widest, spec, quad).out_h) == (2048, 48)
    det = get_decoder("ppocr_det").default_preprocess
    canvas = ShapeSet((1,), ((1920, 1088),))
    plan = frame_plan(canvas, det, 640, 480)
    assert (plan.out_w, plan.out_h) == (1920, 1088) and plan.content[2:] != (1920, 1088)  # padded into it


class ShapeWarmSpy(SpyEngine):
    """The real engine, reported as one that pays for new shapes (a GPU backend's contract), recording
    each call's input shape and thread."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.info = type(engine.info)(**{**engine.info.__dict__, "shape_warmup": True})
        self.log: list[tuple[tuple[int, ...], bool]] = []  # (input shape, a warm-up call)
        self.lock = threading.Lock()

    def infer(self, inputs):  # type: ignore[no-untyped-def]
        x = np.asarray(next(iter(inputs.values())))
        with self.lock:  # a warm-up's first row is a blank image (one value throughout); a crop is not
            self.log.append((tuple(x.shape), bool(np.ptp(x[0]) == 0)))
        return super().infer(inputs)


def test_a_server_serves_after_one_shape_and_no_batch_meets_a_cold_shape(
    ocr_engines: dict[str, Engine],
) -> None:
    """The spy says its engine pays for new shapes, as a GPU backend does: the server serves after one
    shape, warms the rest between batches, and every batch's shape ran in a warm-up before it."""
    from edged.decoders.registry import get_decoder

    spy = ShapeWarmSpy(ocr_engines["ppocr_rec"])
    spec = dataclasses.replace(get_decoder("ppocr_rec").default_preprocess, size=(640, 48))
    rec = serve("ppocr_rec", spy, max_batch=4, widths=(160, 320, 640), spec=spec)
    assert spy_of(rec) is spy
    try:
        total = 3 * 3
        assert rec.warmer.plan.every_shape and rec.warmer.plan.done == 1 and rec.warmer.plan.total == total
        assert rec.warmer.usable == ShapeSet((1,), ((640, 48),))  # serving at once, in the widest shape
        quads = [np.array([[0, 0], [w, 0], [w, 40], [0, 40]], np.float32) for w in (60, 120, 300)]
        done = threading.Event()
        got: list[int] = []

        def deliver(rows, error):  # type: ignore[no-untyped-def]
            assert error is None
            got.append(len(rows))
            if len(got) == 8:
                done.set()

        for i in range(8):  # requests while the shapes are still being warmed
            rec.submit_crops(_frame(i), quads, deliver)
        assert done.wait(60)
        for _ in range(200):
            if not rec.warmer.warming:
                break
            threading.Event().wait(0.05)
        assert (
            not rec.warmer.warming
            and rec.warmer.usable == rec.shapes
            and rec.warmer.plan.progress() == f"{total}/{total}"
        )
        status = rec.status()["warm"]
        assert status["finished"] and status["done"] == total and not status["failed"]
    finally:
        rec.close()
    warmed: set[tuple[int, ...]] = set()
    live = 0
    for shape, warm_call in spy.log:
        if warm_call:
            warmed.add(shape)
            continue
        live += 1
        assert shape in warmed, f"a live batch ran the cold shape {shape} (warm so far: {sorted(warmed)})"
    assert live >= 8 and len(warmed) == total


def _frame(i: int):  # type: ignore[no-untyped-def]
    from edged.types import Frame

    return Frame("cam", i, text_frame("AB12", i))
