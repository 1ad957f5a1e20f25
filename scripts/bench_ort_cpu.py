#!/usr/bin/env python3
"""ONNX Runtime on the CPU, measured for edged's start-up and memory (issue 28, items 4 and 5).

    python scripts/bench_ort_cpu.py first-call [--threads 0]
    python scripts/bench_ort_cpu.py memory [--rounds 3] [--threads 0]

`first-call`: for each input shape the model servers declare for the demo (the PP-OCR detector at the
640x480 camera's 992x736 and the larger canvases, the recognizer's crop widths, 1-4 rows), the first
call of the shape on a session that already ran another shape, against the median of the next three:
whether a CPU session needs each declared shape warmed (a GPU backend does: it re-plans per shape).

`memory`: the session options that decide how much memory ONNX Runtime's CPU provider holds, each in a
fresh process running the same inputs (the detector at 992x736, the recognizer at five widths and 1, 2
and 4 rows): VmRSS after the run and the median time per call. Options run interleaved, `--rounds`
times, so a busy machine's load falls on all of them alike; medians per option are printed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
DET, REC = MODELS / "PP-OCRv6_det_small.onnx", MODELS / "PP-OCRv6_rec_small.onnx"

OPTIONS: dict[str, dict[str, Any]] = {
    "default (arena, memory patterns)": {},
    "no memory patterns": {"mem_pattern": False},
    "arena shrinkage after every run": {"shrink": True},
    "arena shrinkage + no memory patterns": {"shrink": True, "mem_pattern": False},
    "no CPU arena": {"arena": False},
    "no CPU arena + no memory patterns": {"arena": False, "mem_pattern": False},
}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def session(path: Path, threads: int, arena: bool = True, mem_pattern: bool = True) -> Any:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    so.enable_cpu_mem_arena = arena
    so.enable_mem_pattern = mem_pattern
    if threads:
        so.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


def first_call(threads: int) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    for path, shapes in (
        (DET, [(1, 3, 736, 992), (1, 3, 736, 1312), (2, 3, 736, 992), (1, 3, 1088, 1920)]),
        (REC, [(1, 3, 48, 320), (1, 3, 48, 640), (4, 3, 48, 320), (2, 3, 48, 1280), (1, 3, 48, 2048)]),
    ):
        s = session(path, threads)
        name = s.get_inputs()[0].name
        s.run(None, {name: rng.random((1, 3, 48, 160) if path == REC else (1, 3, 64, 64), np.float32)})
        for shape in shapes:
            x = rng.random(shape, np.float32)
            t0 = time.perf_counter()
            s.run(None, {name: x})
            first = time.perf_counter() - t0
            later = []
            for _ in range(3):
                t0 = time.perf_counter()
                s.run(None, {name: x})
                later.append(time.perf_counter() - t0)
            steady = statistics.median(later)
            print(
                json.dumps(
                    {
                        "model": path.stem,
                        "shape": list(shape),
                        "first_ms": round(first * 1e3, 1),
                        "steady_ms": round(steady * 1e3, 1),
                        "ratio": round(first / steady, 2),
                    }
                ),
                flush=True,
            )


def memory_child(opt: dict[str, Any], threads: int) -> dict[str, Any]:
    import numpy as np
    import onnxruntime as ort

    ro = ort.RunOptions()
    if opt.get("shrink"):
        ro.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    kw = {k: v for k, v in opt.items() if k in ("arena", "mem_pattern")}
    det, rec = session(DET, threads, **kw), session(REC, threads, **kw)
    rng = np.random.default_rng(0)
    t_det: list[float] = []
    t_rec: list[float] = []
    widths = [320, 400, 480, 640, 800]
    for i in range(10):
        x = rng.random((1, 3, 736, 992), np.float32)
        t0 = time.perf_counter()
        det.run(None, {det.get_inputs()[0].name: x}, ro)
        t_det.append(time.perf_counter() - t0)
        for n in (1, 2, 4):
            y = rng.random((n, 3, 48, widths[i % len(widths)]), np.float32)
            t0 = time.perf_counter()
            rec.run(None, {rec.get_inputs()[0].name: y}, ro)
            t_rec.append((time.perf_counter() - t0) / n)
    return {
        "rss_mb": round(rss_mb()),
        "det_ms": round(statistics.median(t_det) * 1e3, 1),
        "rec_ms_per_row": round(statistics.median(t_rec) * 1e3, 2),
    }


def memory(rounds: int, threads: int) -> None:
    results: dict[str, list[dict[str, Any]]] = {k: [] for k in OPTIONS}
    for r in range(rounds):
        for label, opt in OPTIONS.items():
            out = subprocess.run(
                [sys.executable, __file__, "_child", json.dumps(opt), str(threads)],
                capture_output=True,
                text=True,
                check=True,
            )
            results[label].append(json.loads(out.stdout))
            print(f"round {r + 1}: {label}: {out.stdout.strip()}", flush=True)
    print(f"\nmedians over {rounds} rounds (load average {os.getloadavg()[0]:.1f}):")
    print("| option | RSS MB | detector ms (1x992x736) | recognizer ms per row |")
    print("|---|---:|---:|---:|")
    for label, runs in results.items():
        med = {k: statistics.median(x[k] for x in runs) for k in runs[0]}
        print(f"| {label} | {med['rss_mb']:.0f} | {med['det_ms']:.0f} | {med['rec_ms_per_row']:.1f} |")


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        print(json.dumps(memory_child(json.loads(sys.argv[2]), int(sys.argv[3]))))
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("first-call", "memory"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="intra-op threads (0: ONNX Runtime's default)")
    a = ap.parse_args()
    if not DET.is_file():
        print(f"{DET} missing: run `edged install-models --dest models`", file=sys.stderr)
        return 1
    if a.what == "first-call":
        first_call(a.threads)
    else:
        memory(a.rounds, a.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
