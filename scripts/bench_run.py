"""The user-level benchmark: `edged run --stdout` as a real process on N cameras of one video, from a
cold start, beside the engines-only rate of the same chain at the same shapes, measured in the same run.

For each camera count it writes a config (the models of --config, N file cameras of --video read as
fast as the chain takes them), starts the daemon, and reads from outside what a user would see:
  startup     spawn -> "startup summary" (models loaded, every declared shape warmed);
  run rate    every camera's frames (edged_frame_latency_seconds_count, from /metrics) over the time
              from the first to the last frame result; steady state = the same over the second half;
  reads       events on stdout against the video's ground truth (make_sample's .json), frame by frame;
  latency     capture -> event (the events' latency_ms.total), p50 / p99;
  threads     the daemon's thread count (/proc/<pid>/status), the most seen while it ran;
  CPU         over the steady half: the host's busy share (/proc/stat; near 1: the CPUs are the limit),
              CPU ms per frame of the daemon's process and of its decode-worker processes, and of the
              daemon's threads by role (/stats threads: OS-named threads, their CPU seconds);
  GPU         the GPU's busy share over the steady half (nvidia-smi utilization.gpu, sampled).
With --decode cpu gpu every camera count runs twice, frames decoded by OpenCV and by the GPU (NVDEC for
H.264/H.265, nvJPEG for MJPEG), side by side in the same run.
Then, after the daemon exited, the engines alone (scripts/_bench.py) on the same frames at the shapes the
servers use: the detector in batches of min(N, max_batch) frames, the recognizer on every crop.

Usage: python scripts/bench_run.py --config configs/examples/gpu.yaml --video samples/plates-1080.mp4 \
           --cameras 1 4 16 [--decode cpu gpu] [--chain ocr|det] [--json out.json] [--fp16 MODEL] \
           [--frames-in-flight N] [--det-limit-side 1920|1280|960] [--motion-region] \
           [--set precision=fp32 --set KEY=VALUE ...]

The detector input size table (docs/benchmarks.md, issue 28 item 3) is three runs on the 1080p video,
--det-limit-side 1920, 1280 and 960: `bash scripts/device_run.sh detsizes` runs them in one lease.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from _bench import engines_only  # noqa: E402

from edged.config.loader import load_config  # noqa: E402
from edged.demo.truth import read_video, sample_truth  # noqa: E402
from edged.serving.loading import load_model  # noqa: E402


def write_config(
    base: Path,
    video: Path,
    size: tuple[int, int],
    cameras: int,
    chain: str,
    port: int,
    out: Path,
    fp16: Sequence[str] = (),
    in_flight: int | None = None,
    decode: str = "auto",
    realtime: bool = False,
    det_limit: int | None = None,
    motion_region: bool = False,
    model_extra: dict[str, Any] | None = None,
) -> Path:
    raw = yaml.safe_load(base.read_text())
    models = {}
    for i, (name, m) in enumerate(raw["models"].items()):
        if name in fp16:
            m.setdefault("onnxruntime", {})["fp16"] = True
        for key, value in (
            model_extra or {}
        ).items():  # e.g. {"precision": "fp32"}, {"onnxruntime.cuda_graph": True}
            node = m
            *parents, last = key.split(".")
            for k in parents:
                node = node.setdefault(k, {})
            node[last] = value
        if i == 0 and det_limit:  # the detector's input size: its longer side, e.g. 1920 -> 1920x1088
            m.setdefault("preprocess", {}).update({"limit_side": det_limit, "limit_type": "max"})
        p = Path(m["path"])
        m["path"] = str(p if p.is_absolute() else (base.parent / p).resolve())
        # What a user with known cameras declares: the detector's input size for their resolution only.
        m.setdefault("batching", {}).setdefault("source_sizes", [list(size)])
        models[name] = m
    det, rec = next(iter(models)), list(models)[-1]
    stages: list[dict[str, Any]] = [{"model": det, "min_score": 0.5}]
    if chain == "ocr":
        stages.append({"model": rec, "on": det, "max_crops": 16})
    else:
        models = {det: models[det]}
    cfg = {
        "device": {"name": "bench"},
        "state_dir": str(out / "state"),
        "mqtt": {"enabled": False},
        "health": {"enabled": True, "bind": "127.0.0.1", "port": port},
        "models": models,
        "cameras": {
            f"cam{i:02d}": {
                "source": f"file://{video.resolve()}",
                # Read as fast as the chain takes them, or (realtime) played at the file's rate, looped, as
                # cameras send: then what the chain cannot keep up with is dropped.
                "realtime": realtime,
                "loop": realtime,
                "fps": 1000,
                "decode": decode,
                "chain": stages,
                **({"frames_in_flight": in_flight} if in_flight else {}),
                **({"motion": {"enabled": True, "region": True}} if motion_region else {}),
            }
            for i in range(cameras)
        },
    }
    path = out / f"bench-{chain}-{cameras}-{decode}{'-rt' if realtime else ''}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return str(r.read().decode())


def frames_done(port: int) -> tuple[float, bool]:
    """(frame results so far over all cameras, every capture ended)."""
    total = 0.0
    for line in get(port, "/metrics").splitlines():
        if line.startswith("edged_frame_latency_seconds_count"):
            total += float(line.rsplit(" ", 1)[1])
    stats = json.loads(get(port, "/stats"))
    ended = all(c["state"] == "ended" for c in stats["cameras"].values())
    return total, ended


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return 0


def profile(pid: int, seconds: float, out: Path) -> list[subprocess.Popen[bytes]]:
    """Sample the daemon's Python stacks with py-spy (when installed), per thread, without pausing it:
    every thread (idle included) and, separately, only the thread that holds the GIL."""
    spy = shutil.which("py-spy")
    if spy is None:
        print("  --profile: py-spy is not installed, no profile", file=sys.stderr)
        return []
    base = [spy, "record", "-p", str(pid), "-d", str(int(seconds)), "-r", "50", "--threads", "--nonblocking"]
    return [
        subprocess.Popen(
            [*base, "--idle", "-f", "raw", "-o", str(out) + "-all.txt"], stderr=subprocess.DEVNULL
        ),
        subprocess.Popen(
            [*base, "--gil", "-f", "raw", "-o", str(out) + "-gil.txt"], stderr=subprocess.DEVNULL
        ),
    ]


def run_daemon(cfg: Path, port: int, expect: int, timeout_s: float, profile_s: float = 0.0) -> dict[str, Any]:
    t_spawn = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "edged", "run", "--config", str(cfg), "--stdout"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    events: list[tuple[float, dict[str, Any]]] = []
    log: list[str] = []
    ready = threading.Event()
    t_ready = [0.0]

    def read_out() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            events.append((time.monotonic(), json.loads(line)))

    def read_err() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            log.append(line)
            if "startup summary" in line and not ready.is_set():
                t_ready[0] = time.monotonic()
                ready.set()

    readers = [threading.Thread(target=f, daemon=True) for f in (read_out, read_err)]
    for t in readers:
        t.start()
    gpu = GpuBusy()
    threads_at: list[tuple[float, float, list[dict[str, Any]]]] = []  # (time, frames done, /stats threads)
    samples: list[tuple[float, float]] = []  # (time, frames done)
    cpu: list[tuple[float, int, int]] = []  # (time, busy, total jiffies of the host)
    tree: list[tuple[float, float, float]] = []  # (time, CPU s of the daemon, of its worker processes)
    threads = 0
    spies: list[subprocess.Popen[bytes]] = []
    deadline = t_spawn + timeout_s
    try:
        while not ready.wait(0.5):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the daemon never became ready:\n" + "".join(log[-30:]))
        said = time.monotonic()
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(poll_wait(samples, expect))
            try:
                done, ended = frames_done(port)
            except OSError as e:
                if time.monotonic() - said > 10:
                    print(f"  health endpoint not answering: {e}", file=sys.stderr, flush=True)
                    said = time.monotonic()
                continue
            if time.monotonic() - said > 10:
                print(f"  {done:.0f}/{expect} frames, ended={ended}", file=sys.stderr, flush=True)
                said = time.monotonic()
            samples.append((time.monotonic(), done))
            cpu.append((time.monotonic(), *cpu_jiffies()))
            if not threads_at or (done >= expect / 2 and len(threads_at) == 1) or (ended and done >= expect):
                with contextlib.suppress(OSError, ValueError, KeyError):
                    threads_at.append((time.monotonic(), done, json.loads(get(port, "/stats"))["threads"]))
            if profile_s and not spies and done >= expect / 4:
                spies = profile(proc.pid, profile_s, cfg.parent / f"prof-{cfg.stem}")
            threads = max(threads, threads_of(proc.pid))
            with contextlib.suppress(OSError):
                tree.append((time.monotonic(), *tree_cpu(proc.pid)))
            if ended and done >= expect:
                break
            now = time.monotonic()
            if ended and samples[0][0] < now - 2 and all(n == done for t, n in samples if t >= now - 2):
                break  # every capture ended and nothing moved for 2 s: frames were dropped or failed
        if spies:
            with contextlib.suppress(OSError):
                (cfg.parent / f"metrics-{cfg.stem}.txt").write_text(get(port, "/metrics"))
    finally:
        gpu.stop()
        for spy in spies:
            with contextlib.suppress(subprocess.TimeoutExpired):
                spy.wait(max(5.0, profile_s))
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
        for t in readers:
            t.join(5)
    (cfg.parent / f"{cfg.stem}.log").write_text("".join(log))
    if proc.returncode not in (0, None):
        raise RuntimeError(f"edged exited with {proc.returncode}:\n" + "".join(log[-30:]))
    return {
        "t_spawn": t_spawn,
        "t_ready": t_ready[0],
        "samples": samples,
        "cpu": cpu,
        "tree": tree,
        "events": events,
        "threads": threads,
        "threads_at": threads_at,
        "gpu": gpu.samples,
        "log": log,
    }


class GpuBusy:
    """The GPU's busy share, sampled every 0.2 s by `nvidia-smi` in the background (none without it)."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []  # (time, utilization.gpu %)
        exe = shutil.which("nvidia-smi")
        self._proc = (
            subprocess.Popen(
                [exe, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "200"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            if exe
            else None
        )
        if self._proc is not None:
            threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            with contextlib.suppress(ValueError):
                self.samples.append((time.monotonic(), float(line.split(",")[0])))

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(5)


def gpu_share(samples: list[tuple[float, float]], t0: float, t1: float) -> float | None:
    inside = [u for t, u in samples if t0 <= t <= t1]
    return round(statistics.mean(inside) / 100.0, 3) if inside else None


def thread_cpu(threads_at: list[tuple[float, float, list[dict[str, Any]]]]) -> dict[str, float]:
    """CPU ms per frame of the daemon's threads between the last two /stats looks, by role: names with
    their numbers dropped (capture-cam03 -> capture-cam, one row for all cameras)."""
    if len(threads_at) < 2:
        return {}
    (_, n0, a), (_, n1, b) = threads_at[-2], threads_at[-1]
    before = {r["tid"]: r["cpu_s"] or 0.0 for r in a}
    roles: dict[str, float] = {}
    for r in b:
        role = "".join(ch for ch in r["name"] if not ch.isdigit()).rstrip("-_:")
        roles[role] = roles.get(role, 0.0) + (r["cpu_s"] or 0.0) - before.get(r["tid"], 0.0)
    frames = max(n1 - n0, 1.0)
    return {k: round(v * 1000 / frames, 2) for k, v in sorted(roles.items(), key=lambda kv: -kv[1]) if v > 0}


def poll_wait(samples: list[tuple[float, float]], expect: int) -> float:
    """Seconds until the next look at the frame count: 0.25 s, or 10 ms while the count is within
    ~0.6 s of half or all of the expected frames, the points the rates are timed at. (Polling only
    every 0.25 s put up to a quarter second of error on a 2.5 s one-camera run: +-10 % on the whole
    run, +-20 % on its second half.)"""
    if len(samples) < 2:
        return 0.05
    (t0, n0), (t1, n1) = samples[-2], samples[-1]
    per_s = (n1 - n0) / max(t1 - t0, 1e-9)
    for target in (expect / 2, expect):
        if n1 < target and (per_s <= 0 or (target - n1) / per_s < 0.6):
            return 0.01
    return 0.25


def cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of the whole host since boot, from /proc/stat (idle and iowait are not busy)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def tree_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds (user + system) so far of process `pid` (all its threads) and of its live child
    processes (the decode workers), from /proc."""
    tick = os.sysconf("SC_CLK_TCK")

    def seconds(stat: str) -> float:
        fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        return (int(fields[11]) + int(fields[12])) / tick  # utime, stime

    own = seconds(Path(f"/proc/{pid}/stat").read_text())
    children = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:  # ppid
                    children += seconds(stat)
    return own, children


def busy_share(cpu: list[tuple[float, int, int]], t0: float, t1: float) -> float | None:
    """The share of the host's CPU time that was busy between t0 and t1 (the samples nearest inside)."""
    inside = [c for c in cpu if t0 <= c[0] <= t1]
    if len(inside) < 2 or inside[-1][2] == inside[0][2]:
        return None
    return (inside[-1][1] - inside[0][1]) / (inside[-1][2] - inside[0][2])


def cpu_per_frame(
    tree: list[tuple[float, float, float]], samples: list[tuple[float, float]], t0: float, t1: float
) -> dict[str, float | None]:
    """Milliseconds of CPU per frame between t0 and t1: the daemon's process, its worker processes."""
    inside = [c for c in tree if t0 <= c[0] <= t1]
    counted = [n for t, n in samples if t0 <= t <= t1]
    if len(inside) < 2 or len(counted) < 2 or counted[-1] == counted[0]:
        return {"cpu_ms_per_frame_daemon": None, "cpu_ms_per_frame_workers": None}
    frames = counted[-1] - counted[0]
    return {
        "cpu_ms_per_frame_daemon": round((inside[-1][1] - inside[0][1]) * 1000 / frames, 2),
        "cpu_ms_per_frame_workers": round((inside[-1][2] - inside[0][2]) * 1000 / frames, 2),
    }


def rate(samples: list[tuple[float, float]], lo: float, hi: float) -> float:
    """Frames per second between the first samples where the count passed lo and hi."""
    t0 = next(t for t, n in samples if n >= lo)
    t1 = next(t for t, n in samples if n >= hi)
    return (hi - lo) / max(t1 - t0, 1e-9)


def summarize(run: dict[str, Any], cameras: int, frames: int, truth: list[list[str]]) -> dict[str, Any]:
    samples = [(t, n) for t, n in run["samples"] if n > 0]
    total = samples[-1][1] if samples else 0
    t_first = samples[0][0] if samples else run["t_ready"]
    t_last = next(t for t, n in samples if n >= total) if samples else run["t_ready"]
    lat = sorted(e["latency_ms"]["total"] for _, e in run["events"])
    reads: dict[tuple[str, int], list[str]] = {}
    for _, e in run["events"]:
        reads[(e["camera"], e["seq"])] = sorted(
            k["label"]
            for d in e["detections"]
            for kids in d.get("children", {}).values()
            for k in kids
            if k["label"]
        )
    half = next((t for t, n in samples if n >= total / 2), t_last)
    host_busy = busy_share(run.get("cpu", []), half, t_last)
    with_text = [i for i in range(frames) if truth[i]]
    exact = sum(reads.get((f"cam{c:02d}", i), []) == truth[i] for c in range(cameras) for i in with_text)
    same_as_first = sum(
        reads.get((f"cam{c:02d}", i), []) == reads.get(("cam00", i), [])
        for c in range(cameras)
        for i in range(frames)
    )
    return {
        "cameras": cameras,
        "frames": int(total),
        "expected_frames": cameras * frames,
        "startup_s": round(run["t_ready"] - run["t_spawn"], 2),
        # Ready -> the first event on stdout, and that frame's own capture -> event latency.
        "first_event_s": round(run["events"][0][0] - run["t_ready"], 3) if run["events"] else None,
        "first_latency_ms": run["events"][0][1]["latency_ms"]["total"] if run["events"] else None,
        "run_fps": round(total / max(t_last - run["t_ready"], 1e-9), 2),
        "run_fps_from_first_result": round(total / max(t_last - t_first, 1e-9), 2) if samples else 0,
        "steady_fps": round(rate(samples, total / 2, total), 2) if total > 4 else 0,
        "exact_reads": exact,
        "reads_possible": cameras * len(with_text),
        "same_as_camera0": same_as_first,
        "latency_p50_ms": round(statistics.median(lat), 1) if lat else None,
        "latency_p99_ms": round(lat[int(0.99 * (len(lat) - 1))], 1) if lat else None,
        "threads": run["threads"],
        # Whether the host's CPUs were the limit: their busy share over the steady (second) half; and
        # what the daemon's own process and its worker processes spent per frame over that half.
        "host_cpu_busy": host_busy if host_busy is None else round(host_busy, 3),
        **cpu_per_frame(run.get("tree", []), samples, half, t_last),
        "cpu_ms_per_frame_by_thread": thread_cpu(run.get("threads_at", [])),
        "gpu_busy": gpu_share(run.get("gpu", []), half, t_last),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=str(ROOT / "configs/examples/gpu.yaml"), help="models come from here")
    ap.add_argument("--video", default=str(ROOT / "samples/plates.mp4"))
    ap.add_argument("--cameras", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--chain", choices=("ocr", "det"), default="ocr")
    ap.add_argument("--port", type=int, default=18089)
    ap.add_argument("--timeout", type=float, default=540)
    ap.add_argument("--out", default="/tmp/edged-bench")
    ap.add_argument("--json", help="append the results here (one JSON object per camera count)")
    ap.add_argument("--fp16", nargs="*", default=[], help="models of --config to run as their fp16 version")
    ap.add_argument(
        "--frames-in-flight", type=int, help="every camera's frames_in_flight (default: the config's default)"
    )
    ap.add_argument(
        "--decode",
        nargs="+",
        choices=("auto", "cpu", "gpu"),
        default=["auto"],
        help="each camera count once per decode mode, side by side (cpu gpu: OpenCV vs NVDEC/nvJPEG)",
    )
    ap.add_argument(
        "--det-limit-side",
        type=int,
        help="the detector's input size by its longer side (1920: 1920x1088, 1280: 1280x736, 960: 960x544 "
        "for 1080p): one row of the detector input size table (issue 28, item 3)",
    )
    ap.add_argument("--motion-region", action="store_true", help="every camera with motion gating on regions")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting of every model (dotted, YAML value), e.g. precision=fp32, onnxruntime.cuda_graph=true",
    )
    ap.add_argument(
        "--profile",
        type=float,
        default=0.0,
        help="seconds of py-spy sampling once a quarter of the frames are done (runs of 16+ cameras)",
    )
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    video = Path(a.video)
    images = read_video(video)
    truth = sample_truth(video, len(images))
    h, w = images[0].shape[:2]
    print(
        f"video {video.name}: {len(images)} frames {w}x{h}, {sum(bool(t) for t in truth)} with text; chain {a.chain}"
    )
    rows = []
    for n, decode in [(n, d) for n in a.cameras for d in a.decode]:
        extra = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in a.set)}
        cfg_path = write_config(
            Path(a.config),
            video,
            (w, h),
            n,
            a.chain,
            a.port,
            out,
            a.fp16,
            a.frames_in_flight,
            decode,
            det_limit=a.det_limit_side,
            motion_region=a.motion_region,
            model_extra=extra,
        )
        run = run_daemon(cfg_path, a.port, n * len(images), a.timeout, a.profile if n >= 16 else 0.0)
        row = summarize(run, n, len(images), truth)
        row["decode"] = decode
        # The engines alone, same process kind of work, after the daemon has gone (nothing shares the device).
        cfg = load_config(cfg_path, env={})
        models = {k: load_model(k, m, source_sizes=[(w, h)]) for k, m in cfg.models.items()}
        det = models[next(iter(cfg.cameras.values())).chain[0].model]
        rec = models[next(iter(cfg.cameras.values())).chain[-1].model] if a.chain == "ocr" else None
        det_rows = min(n, det.shapes.max_rows)
        engines_only(det, rec, images[: min(len(images), 8)], det_rows)  # first calls of this process
        seconds, detail = engines_only(det, rec, images, det_rows)
        for m in models.values():
            m.close()
        row["engines_only_fps"] = round(len(images) / seconds, 2)
        row["vs_engines_only"] = round(row["run_fps"] / row["engines_only_fps"], 3)
        row["engine_detail"] = {**detail, "det_rows": det_rows}
        row["machine"] = {"cpus": os.cpu_count(), "video": f"{video.name} {w}x{h} x{len(images)}"}
        row["fp16"] = list(a.fp16)
        row["det_limit_side"] = a.det_limit_side
        row["motion_region"] = a.motion_region
        row["set"] = list(a.set)
        row["det_shapes"] = det.shapes.describe()
        row["frames_in_flight"] = cfg.cameras["cam00"].frames_in_flight
        rows.append(row)
        print(json.dumps(row), flush=True)
        if a.json:
            with open(a.json, "a") as f:
                f.write(json.dumps({**row, "chain": a.chain}) + "\n")
    one = next((r for r in rows if r["cameras"] == 1), None)  # the first decode mode's
    print(
        "\n| cameras | decode | startup s | run frames/s | steady frames/s | engines-only | run/engines | exact reads | p50 / p99 ms | threads | host CPU busy | CPU ms/frame daemon / workers | GPU busy |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['cameras']} | {r['decode']} | {r['startup_s']} | {r['run_fps']} | {r['steady_fps']} | {r['engines_only_fps']} | "
            f"{r['vs_engines_only']} | {r['exact_reads']}/{r['reads_possible']} | "
            f"{r['latency_p50_ms']} / {r['latency_p99_ms']} | {r['threads']} | {r['host_cpu_busy']} | "
            f"{r['cpu_ms_per_frame_daemon']} / {r['cpu_ms_per_frame_workers']} | {r['gpu_busy']} |"
        )
    for r in rows:
        print(
            f"{r['cameras']} cameras, decode {r['decode']}: CPU ms/frame by thread {r['cpu_ms_per_frame_by_thread']}"
        )
    if one is not None:
        for r in rows:
            print(
                f"{r['cameras']} cameras: run rate {r['run_fps'] / max(one['steady_fps'], 1e-9):.2f} x the 1-camera steady state"
            )
        print(f"1 camera: run / steady = {one['run_fps'] / max(one['steady_fps'], 1e-9):.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
