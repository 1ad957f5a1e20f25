"""`edged doctor`: what this machine offers edged, as a table with a fix for each failure.

Works on a plain PC too: accelerations that are absent are reported as such, not as errors. The exit
code is non-zero only when something *required* fails (an inference backend, a frame source, a valid
config, a writable outbox).
"""

from __future__ import annotations

import ctypes
import glob
import os
import shutil
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edged.observability.environment import opencv_info

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
    providers = ort.get_available_providers()
    gpu = [p for p in providers if p in ("CUDAExecutionProvider", "TensorrtExecutionProvider")]
    return Check(
        "ONNX Runtime",
        OK,
        f"{ort.__version__}; providers: {', '.join(providers)}" + ("" if gpu else " (CPU only)"),
    )


def check_cuda_context() -> Check:
    """pycuda creating (and dropping) a context proves driver, device and pycuda build all fit together."""
    name = "CUDA context (pycuda)"
    try:
        import pycuda.driver as cuda
    except Exception as e:  # ImportError, or pycuda built against another CUDA (OSError/RuntimeError)
        return Check(name, INFO, f"skipped: pycuda not usable ({type(e).__name__})")
    cuda.init()
    if cuda.Device.count() == 0:
        return Check(name, WARN, "pycuda sees no CUDA device", "check the driver (nvidia-smi / tegrastats)")
    dev = cuda.Device(0)
    ctx = dev.make_context()
    try:
        free, total = cuda.mem_get_info()
    finally:
        ctx.pop()
        ctx.detach()
    major, minor = dev.compute_capability()
    return Check(
        name, OK, f"{dev.name()} sm_{major}{minor}, {free / 2**30:.1f} of {total / 2**30:.1f} GiB free"
    )


def check_gpu_decode() -> Check:
    """Whether cameras can decode on the GPU (decode: auto/gpu): NVDEC for video, nvJPEG for JPEG."""
    from edged.capture import nvdec, nvjpeg

    video, jpeg = nvdec.available(), nvjpeg.available()
    fix = (
        "pip install 'edged[gpu-decode]' (NVIDIA's PyNvVideoCodec and nvImageCodec; needs the NVIDIA driver)"
    )
    if video is None and jpeg is None:
        return Check("GPU decode", OK, "NVDEC (PyNvVideoCodec) and nvJPEG (nvImageCodec)")
    if video is None or jpeg is None:
        have, why = ("NVDEC", jpeg) if video is None else ("nvJPEG", video)
        return Check("GPU decode", OK, f"{have} only; the other: {why}", fix)
    return Check("GPU decode", INFO, f"cameras decode on the CPU (OpenCV): {video}", fix)


def check_accelerations(results: list[Check]) -> Check:
    """One line saying which accelerations this machine lacks (a plain PC lacks them all, and that's fine)."""
    wanted = ["CUDA driver", "pycuda", "TensorRT", "jetson-utils", "GPU decode"]
    have = {c.name for c in results if c.status == OK}
    absent = [n for n in wanted if n not in have]
    cv = next((c for c in results if c.name == "OpenCV"), None)
    if cv is None or "CUDA yes" not in cv.detail:
        absent.append("OpenCV CUDA")
    if not absent:
        return Check("accelerations", OK, "all present")
    return Check("accelerations", INFO, "absent: " + ", ".join(absent) + "; CPU paths are used instead")


def check_telemetry() -> Check:
    from edged.observability.telemetry import Telemetry

    snap = Telemetry(max_age_s=0).snapshot()
    if not snap["jetson"]["available"]:
        load = snap["cpu"].get("load")
        extra = f"; CPU load {' '.join(f'{x:g}' for x in load)}" if load else ""
        return Check("device telemetry", INFO, f"{snap['jetson']['reason']}{extra}")
    parts = [f"via {snap['source']}"]
    if snap["nvpmodel"]:
        parts.append(f"power mode {snap['nvpmodel'].get('mode', snap['nvpmodel'].get('id'))}")
    if snap["temperatures_c"]:
        parts.append(f"max {max(snap['temperatures_c'].values()):.0f} °C")
    rails = snap["power_mw"]
    if rails:
        parts.append(f"{len(rails)} power rail(s)")
    if snap["throttling"]["active"]:
        return Check(
            "device telemetry",
            WARN,
            ", ".join(parts) + "; THROTTLING",
            "cool the module or lower the power mode",
        )
    missing = ", ".join(snap.get("unavailable", {}))
    return Check("device telemetry", OK, ", ".join(parts) + (f"; not exposed: {missing}" if missing else ""))


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
    from edged.config.loader import load_config
    from edged.config.problems import ConfigError

    try:
        cfg = load_config(path)
    except ConfigError as e:
        first = str(e.problems[0]) + (f" (+{len(e.problems) - 1} more)" if len(e.problems) > 1 else "")
        return [Check("config", FAIL, first, f"edged check-config {path}")]
    out = [Check("config", OK, f"{path}: {len(cfg.models)} model(s), {len(cfg.cameras)} camera(s)")]
    if cfg.mqtt.enabled:
        out.append(_try(lambda: check_broker(cfg.mqtt), "broker"))
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
        fix = "" if status == OK else "free disk space"
        if not os.access(probe, os.W_OK):
            # An unwritable engine cache is why TensorRT engines get rebuilt on every start.
            status, fix = (
                WARN,
                f"{probe} is not writable by {_user()} (the service's StateDirectory/CacheDirectory?)",
            )
        out.append(Check(title, status, f"{d}: {free:.1f} GiB free", fix))
    return out


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.geteuid()).pw_name
    except (ImportError, KeyError):
        return str(os.geteuid())


def check_broker(mqtt_cfg: Any) -> Check:
    """A real MQTT CONNECT with the configured credentials and TLS, under a client id of its own (reusing
    edged's would disconnect a running daemon)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from edged.publish.mqtt.client import use_tls

    where = f"{mqtt_cfg.host}:{mqtt_cfg.port}"
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"edged-doctor-{os.getpid()}")
    if mqtt_cfg.username is not None:
        pw = mqtt_cfg.password.get_secret_value() if mqtt_cfg.password else None
        client.username_pw_set(mqtt_cfg.username, pw)
    if mqtt_cfg.tls.enabled:
        use_tls(client, mqtt_cfg.tls)
    done = threading.Event()
    result: dict[str, Any] = {}

    def on_connect(c: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        result["rc"] = rc
        done.set()

    client.on_connect = on_connect
    outbox_note = "events wait in the outbox meanwhile"
    try:
        client.connect(mqtt_cfg.host, mqtt_cfg.port, keepalive=10)
    except ssl.SSLError as e:
        why = getattr(e, "verify_message", None) or e.reason or str(e)
        return Check(
            "broker", WARN, f"{where}: TLS handshake failed: {why}", f"check mqtt.tls.ca_file; {outbox_note}"
        )
    except OSError as e:
        return Check(
            "broker", WARN, f"{where}: {e.strerror or e}", f"check host/port/firewall; {outbox_note}"
        )
    client.loop_start()
    try:
        answered = done.wait(5)
    finally:
        client.disconnect()
        client.loop_stop()
    if not answered:
        return Check("broker", WARN, f"{where}: no CONNACK within 5 s", f"is it an MQTT port? {outbox_note}")
    rc = result["rc"]
    if rc.is_failure:
        return Check(
            "broker",
            WARN,
            f"{where}: refused: {rc.getName()}",
            f"check mqtt.username/password; {outbox_note}",
        )
    return Check("broker", OK, f"{where}: MQTT connect accepted" + (" (TLS)" if mqtt_cfg.tls.enabled else ""))


def check_state_dir(path: str = "/var/lib/edged") -> Check:
    """Without a config: the default state (outbox) location's free space."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free / 2**30
    status = OK if free > 1 else WARN
    return Check(
        "disk", status, f"{path} (on {probe}): {free:.1f} GiB free", "" if status == OK else "free disk space"
    )


def check_systemd() -> Check:
    if not shutil.which("systemctl"):
        return Check("systemd unit", INFO, "systemctl not available")
    r = subprocess.run(["systemctl", "is-active", "edged"], capture_output=True, text=True, timeout=5)
    lines = (r.stdout.strip() or r.stderr.strip() or "unknown").splitlines()
    state = lines[0]
    return Check(
        "systemd unit", OK if state == "active" else INFO, f"edged.service: {state}", "scripts/install.sh"
    )


def run_checks(config: str | None) -> list[Check]:
    results = [
        Check("Python", OK, sys.version.split()[0]),
        _try(check_jetpack, "JetPack / L4T"),
        _try(check_cuda_driver, "CUDA driver"),
        check_module("pycuda", "pycuda", "pip install 'edged[jetson]' (needs nvcc)", "VERSION_TEXT"),
        check_module("TensorRT", "tensorrt", "comes with JetPack (python3-libnvinfer)"),
        check_module("jetson-utils", "jetson_utils", "build jetson-inference (NOT the PyPI jetson-utils)"),
        _try(check_opencv, "OpenCV"),
        _try(check_onnxruntime, "ONNX Runtime"),
        _try(check_gpu_decode, "GPU decode"),
    ]
    results.insert(4, _try(check_cuda_context, "CUDA context (pycuda)"))
    results.append(check_backend(results))
    results.append(check_accelerations(results))
    results.append(_try(check_telemetry, "device telemetry"))
    results.append(_try(check_cameras, "cameras"))
    if config:
        results.extend(check_config(config))
    else:
        results.append(_try(check_state_dir, "disk"))
    results.append(_try(check_systemd, "systemd unit"))
    return results


def render(results: list[Check]) -> tuple[str, int]:
    """The doctor's table (a fix under each failure) and the exit code: 1 if a required check failed."""
    width = max(len(c.name) for c in results)
    lines = []
    for c in results:
        lines.append(f"{c.status:>4}  {c.name:<{width}}  {c.detail}")
        if c.fix and c.status != OK:
            lines.append(f"{'':>4}  {'':<{width}}  fix: {c.fix}")
    failed = [c for c in results if c.status == FAIL]
    lines.append(f"\n{len(failed)} required check(s) failed" if failed else "\nall required checks passed")
    return "\n".join(lines), 1 if failed else 0
