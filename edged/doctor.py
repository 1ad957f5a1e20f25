"""`edged doctor`: what this machine offers edged, as a table with a fix for each failure.

Works on a plain PC too: accelerations that are absent are reported as such, not as errors. The exit
code is non-zero only when something *required* fails (an inference backend, a frame source, a valid
config, a writable outbox).
"""

from __future__ import annotations

import ctypes
import glob
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edged.environment import opencv_info

OK, WARN, FAIL, INFO = "ok", "warn", "FAIL", "info"


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str = ""


def _try(fn: Callable[[], Check], name: str) -> Check:
    try:
        return fn()
    except Exception as e:  # a check must never crash the doctor
        return Check(name, WARN, f"check failed: {type(e).__name__}: {e}")


def check_jetpack() -> Check:
    rel = Path("/etc/nv_tegra_release")
    if rel.is_file():
        return Check("JetPack / L4T", OK, rel.read_text().splitlines()[0].strip("# ").strip())
    return Check("JetPack / L4T", INFO, "not a Jetson (no /etc/nv_tegra_release)")


def check_cuda_driver() -> Check:
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return Check(
            "CUDA driver",
            INFO,
            "no libcuda.so.1: GPU paths unavailable",
            "install the NVIDIA driver / JetPack",
        )
    version = ctypes.c_int()
    lib.cuDriverGetVersion(ctypes.byref(version))
    v = version.value
    return Check("CUDA driver", OK, f"CUDA {v // 1000}.{(v % 1000) // 10}")


def check_module(title: str, module: str, fix: str, attr: str = "__version__") -> Check:
    try:
        mod = __import__(module)
    except Exception as e:
        return Check(title, INFO, f"not importable ({type(e).__name__})", fix)
    if getattr(mod, "__file__", None) is None:
        # An empty namespace package (e.g. left by tensorrt-stubs or a failed install) is not the library.
        return Check(title, INFO, f"only an empty '{module}' namespace package is installed", fix)
    return Check(title, OK, str(getattr(mod, attr, "present")))


def check_opencv() -> Check:
    info = opencv_info()
    if not info["loaded"]:
        return Check(
            "OpenCV",
            WARN,
            "not importable",
            "pip install 'edged[cv]' (PC) or apt install python3-opencv (Jetson)",
        )
    detail = (
        f"{info['version']} ({info['path']}); CUDA {'yes' if info['cuda_devices'] else 'no'}, "
        f"GStreamer {'yes' if info['gstreamer'] else 'no'}"
    )
    fix = ""
    if (
        Path("/etc/nv_tegra_release").is_file()
        and "site-packages" in str(info["path"])
        and not info["gstreamer"]
    ):
        fix = "a pip OpenCV shadows JetPack's: pip uninstall opencv-python opencv-contrib-python-headless"
    return Check("OpenCV", OK if not fix else WARN, detail, fix)


def check_onnxruntime() -> Check:
    try:
        import onnxruntime as ort
    except ImportError:
        return Check("ONNX Runtime", WARN, "not installed", "pip install onnxruntime (or onnxruntime-gpu)")
    return Check(
        "ONNX Runtime", OK, f"{ort.__version__}; providers: {', '.join(ort.get_available_providers())}"
    )


def check_backend(results: list[Check]) -> Check:
    have = {c.name for c in results if c.status == OK}
    if {"TensorRT", "ONNX Runtime"} & have:
        return Check("inference backend", OK, ", ".join(sorted({"TensorRT", "ONNX Runtime"} & have)))
    return Check("inference backend", FAIL, "neither TensorRT nor ONNX Runtime", "pip install onnxruntime")


def check_cameras() -> Check:
    devs = sorted(glob.glob("/dev/video*"))
    csi = Path("/dev/nvhost-vi").exists() or Path("/dev/nvhost-nvcsi").exists()
    detail = f"{', '.join(devs) if devs else 'no /dev/video*'}; CSI {'present' if csi else 'absent'}"
    return Check(
        "cameras", OK if devs else INFO, detail, "" if devs else "file:// and rtsp:// sources still work"
    )


def check_config(path: str) -> list[Check]:
    from edged.config import ConfigError, load_config

    try:
        cfg = load_config(path)
    except ConfigError as e:
        first = str(e.problems[0]) + (f" (+{len(e.problems) - 1} more)" if len(e.problems) > 1 else "")
        return [Check("config", FAIL, first, f"edged check-config {path}")]
    out = [Check("config", OK, f"{path}: {len(cfg.models)} model(s), {len(cfg.cameras)} camera(s)")]
    if cfg.mqtt.enabled:
        try:
            with socket.create_connection((cfg.mqtt.host, cfg.mqtt.port), timeout=2):
                out.append(Check("broker", OK, f"{cfg.mqtt.host}:{cfg.mqtt.port} accepts connections"))
        except OSError as e:
            out.append(
                Check(
                    "broker",
                    WARN,
                    f"{cfg.mqtt.host}:{cfg.mqtt.port}: {e}",
                    "events wait in the outbox; check host/port/firewall",
                )
            )
    for title, d in (
        ("outbox disk", cfg.mqtt.outbox.dir),
        ("engine cache disk", next((m.tensorrt.cache_dir for m in cfg.models.values()), None)),
    ):
        if d is None:
            continue
        probe = Path(d)
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        free = shutil.disk_usage(probe).free / 2**30
        status = OK if free > 1 else WARN
        out.append(
            Check(title, status, f"{d}: {free:.1f} GiB free", "" if status == OK else "free disk space")
        )
    return out


def check_systemd() -> Check:
    if not shutil.which("systemctl"):
        return Check("systemd unit", INFO, "systemctl not available")
    r = subprocess.run(["systemctl", "is-active", "edged"], capture_output=True, text=True, timeout=5)
    state = r.stdout.strip() or r.stderr.strip()
    return Check(
        "systemd unit", OK if state == "active" else INFO, f"edged.service: {state}", "scripts/install.sh"
    )


def run_doctor(config: str | None) -> int:
    results = [
        Check("Python", OK, sys.version.split()[0]),
        _try(check_jetpack, "JetPack / L4T"),
        _try(check_cuda_driver, "CUDA driver"),
        check_module("pycuda", "pycuda", "pip install 'edged[jetson]' (needs nvcc)", "VERSION_TEXT"),
        check_module("TensorRT", "tensorrt", "comes with JetPack (python3-libnvinfer)"),
        check_module("jetson-utils", "jetson_utils", "build jetson-inference (NOT the PyPI jetson-utils)"),
        _try(check_opencv, "OpenCV"),
        _try(check_onnxruntime, "ONNX Runtime"),
    ]
    results.append(check_backend(results))
    results.append(_try(check_cameras, "cameras"))
    if config:
        results.extend(check_config(config))
    results.append(_try(check_systemd, "systemd unit"))
    width = max(len(c.name) for c in results)
    for c in results:
        print(f"{c.status:>4}  {c.name:<{width}}  {c.detail}")
        if c.fix and c.status != OK:
            print(f"{'':>4}  {'':<{width}}  fix: {c.fix}")
    failed = [c for c in results if c.status == FAIL]
    print(f"\n{len(failed)} required check(s) failed" if failed else "\nall required checks passed")
    return 1 if failed else 0
