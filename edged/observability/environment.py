"""What this machine offers edged: which OpenCV is loaded (and whether it has CUDA and GStreamer),
GPU support, jetson-utils, TensorRT. Logged at start, because on a Jetson a pip OpenCV silently
shadowing JetPack's build is the classic cause of 'my CSI camera does not open'."""

from __future__ import annotations

import re
from typing import Any


def opencv_info() -> dict[str, Any]:
    try:
        import cv2
    except ImportError as e:
        return {"loaded": False, "error": str(e)}
    build = cv2.getBuildInformation()

    def flag(name: str) -> bool:
        m = re.search(rf"^\s*{name}:\s*(\S+)", build, re.MULTILINE)
        return bool(m and m.group(1).upper().startswith("YES"))

    try:
        cuda_devices = int(cv2.cuda.getCudaEnabledDeviceCount())
    except (AttributeError, Exception):  # no cv2.cuda module, or no driver
        cuda_devices = 0
    return {
        "loaded": True,
        "version": cv2.__version__,
        "path": getattr(cv2, "__file__", "?"),
        "cuda_devices": cuda_devices,
        "gstreamer": flag("GStreamer"),
        "ffmpeg": flag("FFMPEG"),
    }


def opencv_report() -> str:
    info = opencv_info()
    if not info["loaded"]:
        return f"OpenCV: not importable ({info['error']}); install the `cv` extra or JetPack's python3-opencv"
    return (
        f"OpenCV {info['version']} from {info['path']}: CUDA {'yes' if info['cuda_devices'] else 'no'}, "
        f"GStreamer {'yes' if info['gstreamer'] else 'no'}, FFmpeg {'yes' if info['ffmpeg'] else 'no'}"
    )
