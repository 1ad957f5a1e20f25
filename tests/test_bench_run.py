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


def test_host_cpu_busy_share_sees_a_busy_core() -> None:
    """The 'host CPU busy' column: /proc/stat's busy share between two samples. One core spinning for
    half a second shows as at least most of one core's share; the arithmetic on given samples is exact."""
    import os
    import time

    mod = bench_run()
    t0 = time.monotonic()
    start = (t0, *mod.cpu_jiffies())
    while time.monotonic() - t0 < 0.5:
        pass
    end = (time.monotonic(), *mod.cpu_jiffies())
    assert 0 <= start[1] <= start[2] and end[2] > start[2]
    share = mod.busy_share([start, end], start[0], end[0])
    assert share is not None and 0.8 / (os.cpu_count() or 1) <= share <= 1.0
    assert mod.busy_share([(0.0, 100, 1000), (1.0, 400, 1600), (2.0, 999, 9999)], 0.0, 1.5) == 0.5
    assert mod.busy_share([(0.0, 100, 1000)], 0.0, 1.0) is None  # one sample: no interval


def test_cpu_of_the_daemon_and_of_its_worker_processes_is_counted_apart() -> None:
    """A real process that spins, then starts a spinning child and waits: /proc shows the parent's
    CPU as its own and the child's as its workers'."""
    import subprocess
    import time

    mod = bench_run()
    code = (
        "import subprocess, sys, time\n"
        "t = time.time()\n"
        "while time.time() - t < 0.4: pass\n"
        "c = subprocess.Popen([sys.executable, '-c', 'while True: pass'])\n"
        "print('spinning', flush=True)\n"
        "sys.stdin.readline()\n"
        "c.kill()\n"
    )
    p = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert p.stdout is not None and p.stdin is not None
    try:
        assert p.stdout.readline() == "spinning\n"
        own0, kids0 = mod.tree_cpu(p.pid)
        time.sleep(0.8)
        own1, kids1 = mod.tree_cpu(p.pid)
    finally:
        p.stdin.write("\n")
        p.stdin.flush()
        p.wait(10)
    assert own0 >= 0.3  # the parent's own spin
    assert kids1 - kids0 >= 0.3  # the child spun while the parent waited
    assert own1 - own0 < 0.15
    per_frame = mod.cpu_per_frame([(1.0, 2.0, 5.0), (2.0, 2.5, 6.0)], [(1.0, 100), (2.0, 200)], 0.5, 2.5)
    assert per_frame == {"cpu_ms_per_frame_daemon": 5.0, "cpu_ms_per_frame_workers": 10.0}


def test_written_configs_load_and_carry_the_requested_frames_in_flight(tmp_path: Path) -> None:
    from edged.config.loader import load_config

    mod = bench_run()
    base = ROOT / "configs/examples/gpu.yaml"
    video = tmp_path / "v.avi"
    video.write_bytes(b"")  # the config only names it
    for in_flight, want in ((None, None), (4, 4)):  # None: the daemon decides (4 on a GPU)
        path = mod.write_config(
            base, video, (1920, 1080), 3, "ocr", 18089, tmp_path, ("text_det",), in_flight
        )
        cfg = load_config(path, env={}, check_files=False)
        assert [c.frames_in_flight for c in cfg.cameras.values()] == [want] * 3
        assert [len(c.chain) for c in cfg.cameras.values()] == [2] * 3
