"""Decoding batches in worker processes (DecodePool): the same detections as in-thread decoding, in row
order, from real PP-OCR detector outputs; a killed worker degrades to in-thread decoding, loudly."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edged.decoders.registry import build_decoder, get_decoder
from edged.infer.base import Engine
from edged.preprocess.cpu import CpuPreprocessor
from edged.preprocess.spec import plan_frame
from edged.serving.decodepool import DEPTH, DecodePool, rows_per_task
from edged.types import Frame
from tests.support.chain import text_frame


@pytest.fixture(scope="module")
def batch(
    ocr_engines: dict[str, Engine],
) -> tuple[dict[str, np.ndarray], list]:
    """Detector outputs for 9 frames of different text, and their plans."""
    det = ocr_engines["ppocr_det"]
    frames = [Frame(f"c{i}", i, text_frame(["AB", "XY", "KM"][i % 3] * (1 + i % 2), i)) for i in range(9)]
    spec = get_decoder("ppocr_det").default_preprocess
    plans = [plan_frame(spec, f.width, f.height) for f in frames]
    tensor = CpuPreprocessor().rows(list(zip(frames, plans, strict=True)), spec)
    return det.infer({det.inputs[0].name: tensor}), plans


def boxes(found: list) -> list[list[tuple]]:
    return [[(d.label, round(d.score, 6), d.box, d.polygon) for d in dets] for dets in found]


def test_workers_decode_exactly_what_one_thread_does(batch: tuple) -> None:
    outputs, plans = batch
    decoder = build_decoder("ppocr_det", {})
    want = decoder.decode(outputs, plans)
    assert all(want), "every frame has text: an empty comparison would prove nothing"
    pool = DecodePool(decoder, workers=2)
    try:
        for _ in range(2):  # the shared block is reused across batches
            assert boxes(pool.decode(outputs, plans)) == boxes(want)
        assert boxes(pool.decode({k: v[:5] for k, v in outputs.items()}, plans[:5])) == boxes(want[:5])
        assert pool.broken is None
    finally:
        pool.close()


def test_two_batches_in_the_workers_at_once_come_back_in_order(batch: tuple) -> None:
    """submit() returns at once: a second batch goes out (into the other shared block) before the first
    is collected, and each comes back as in-thread decoding gives it; on_done fires once per batch."""
    outputs, plans = batch
    decoder = build_decoder("ppocr_det", {})
    second = {k: np.ascontiguousarray(v[::-1]) for k, v in outputs.items()}  # other rows, other order
    want = [boxes(decoder.decode(outputs, plans)), boxes(decoder.decode(second, plans[::-1]))]
    assert want[0] != want[1]
    pool = DecodePool(decoder, workers=2)
    done: list[int] = []
    try:
        for _ in range(2):  # both shared blocks reused
            assert DEPTH == 2
            first = pool.submit(outputs, plans, lambda: done.append(1))
            other = pool.submit(second, plans[::-1], lambda: done.append(2))
            assert [boxes(first.result()), boxes(other.result())] == want
        assert sorted(done) == [1, 1, 2, 2] and pool.broken is None
    finally:
        pool.close()


def test_two_batches_in_flight_when_the_workers_die_are_both_decoded(
    batch: tuple, caplog: pytest.LogCaptureFixture
) -> None:
    """Workers killed with two batches submitted: whichever way the pool reports it (at submit, or on
    a batch's tasks), each batch is decoded in this thread from its own shared block, in order."""
    outputs, plans = batch
    decoder = build_decoder("ppocr_det", {})
    want = boxes(decoder.decode(outputs, plans))
    pool = DecodePool(decoder, workers=2)
    try:
        pool.start()
        for pid in list(pool._pool._processes):  # type: ignore[attr-defined]
            os.kill(pid, signal.SIGKILL)
        with caplog.at_level(logging.ERROR):
            first = pool.submit(outputs, plans)
            second = pool.submit({k: v[:4] for k, v in outputs.items()}, plans[:4])
            assert boxes(first.result()) == want and boxes(second.result()) == want[:4]
        assert pool.broken is not None
        assert sum("decode workers failed" in r.getMessage() for r in caplog.records) == 1
    finally:
        pool.close()


def test_workers_run_opencv_on_one_thread() -> None:
    """The workers are the parallelism: OpenCV's own thread pool stays off in each (its threads spin
    between calls, on every core, in every worker)."""
    import cv2

    pool = DecodePool(build_decoder("ppocr_det", {}), workers=2)
    try:
        pool.start()
        seen = {pool._pool.submit(cv2.getNumThreads).result() for _ in range(4)}  # type: ignore[attr-defined]
    finally:
        pool.close()
    assert seen == {1}


def test_a_task_holds_enough_rows_to_pay_for_its_hand_off() -> None:
    full_hd_map = 1088 * 1920  # bytes of one 1080p detector map reduced to bytes on the GPU
    assert rows_per_task(16, 8, full_hd_map) == 2  # every worker busy
    assert rows_per_task(16, 8, 320 * 240 * 4) == 4  # small float maps: fewer, bigger tasks
    assert rows_per_task(3, 8, 64) == 3  # tiny outputs: one task
    assert rows_per_task(1, 8, 0) == 1


def test_a_killed_worker_falls_back_to_in_thread_decoding(
    batch: tuple, caplog: pytest.LogCaptureFixture
) -> None:
    outputs, plans = batch
    decoder = build_decoder("ppocr_det", {})
    want = boxes(decoder.decode(outputs, plans))
    pool = DecodePool(decoder, workers=2)
    try:
        assert boxes(pool.decode(outputs, plans)) == want  # workers are up
        for pid in list(pool._pool._processes):  # type: ignore[attr-defined]
            os.kill(pid, signal.SIGKILL)
        with caplog.at_level(logging.ERROR):
            assert boxes(pool.decode(outputs, plans)) == want
            assert boxes(pool.decode(outputs, plans)) == want
        assert pool.broken is not None
        assert [r.getMessage() for r in caplog.records].count(
            f"decode workers failed ({pool.broken}): decoding in one thread from now on"
        ) == 1
    finally:
        pool.close()


CHILD = """
import os, signal, sys, time
import numpy as np
from edged.serving.decodepool import DEPTH, DecodePool, rows_per_task
from edged.decoders.registry import build_decoder
from edged.preprocess.spec import PreprocessSpec, plan_frame

if __name__ == "__main__":
    pool = DecodePool(build_decoder("ppocr_det", {}), workers=2)
    plans = [plan_frame(PreprocessSpec(resize="stretch", size=(64, 32)), 64, 32)] * 8
    pool.start()  # every worker now
    print(" ".join(str(p) for p in pool._pool._processes), flush=True)
    sys.stdin.readline()  # the test signals the workers, then lets us decode again
    found = pool.decode({"x": np.zeros((8, 1, 32, 64), np.float32)}, plans)
    print(len(found), pool.broken, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # die without shutting the pool down
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/status").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text()


def _ignores_stop_signals(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status").read_text()
    ignored = int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("SigIgn:")), 16)
    return all(ignored & (1 << (sig - 1)) for sig in (signal.SIGINT, signal.SIGTERM))


def test_workers_ignore_stop_signals_and_exit_when_the_parent_dies(tmp_path: Path) -> None:
    """systemd stops a unit by signalling every process of its cgroup: the workers leave stopping to
    the parent (which drains frames first). A parent killed outright must not leave workers behind."""
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=root,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
        },
    )
    assert proc.stdout is not None and proc.stdin is not None
    workers = [int(p) for p in proc.stdout.readline().split()]
    assert len(workers) == 2 and all(_alive(p) for p in workers)
    # A worker still starting up has not yet set its handlers: wait until both ignore SIGINT and SIGTERM.
    deadline = time.monotonic() + 20
    while not all(_ignores_stop_signals(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_ignores_stop_signals(p) for p in workers)
    for pid in workers:
        os.kill(pid, signal.SIGTERM)
        os.kill(pid, signal.SIGINT)
    time.sleep(0.5)
    assert all(_alive(p) for p in workers), "a stop signal killed a worker"
    proc.stdin.write("\n")
    proc.stdin.flush()
    assert proc.stdout.readline().split() == ["8", "None"]  # the pool still decodes, nothing broke
    proc.wait(30)
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in workers), "workers outlived their parent"
