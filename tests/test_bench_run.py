"""scripts/bench_run.py times its rates from /metrics samples: it polls finely (10 ms) around the points
it times (half and all of the expected frames) and coarsely (0.25 s) elsewhere, so a short one-camera
run is not measured to a quarter second."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def bench_run() -> ModuleType:
    sys.path.insert(0, str(ROOT / "scripts"))
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "scripts/bench_run.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_polls_finely_only_near_the_timed_points() -> None:
    poll_wait = bench_run().poll_wait
    expect = 240  # 100 frames/s below
    assert poll_wait([], expect) == 0.05  # no rate known yet
    assert poll_wait([(0.0, 0), (0.25, 0)], expect) == 0.01  # waiting for the first frames
    assert poll_wait([(0.0, 0), (0.25, 25)], expect) == 0.25  # 0.95 s before half
    assert poll_wait([(0.0, 40), (0.25, 65)], expect) == 0.01  # 0.55 s before half
    assert poll_wait([(0.0, 120), (0.25, 145)], expect) == 0.25  # half passed, 0.95 s before the end
    assert poll_wait([(0.0, 170), (0.25, 195)], expect) == 0.01  # 0.45 s before the end
    assert poll_wait([(0.0, 230), (0.25, 240)], expect) == 0.25  # done: nothing left to time
