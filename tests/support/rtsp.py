"""tests/support/rtsp_server.py as a fixture-free helper: a live RTSP camera (GStreamer, under the system Python)
that a test can start, stop and restart, optionally accepting RTP over TCP only."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.edged import wait_until

SYSTEM_PYTHON = "/usr/bin/python3"
RTSP_SERVER = Path(__file__).with_name("rtsp_server.py")


def rtsp_server_missing() -> str | None:
    """Why tests/support/rtsp_server.py cannot run here (None if it can)."""
    probe = (
        "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
        "from gi.repository import Gst; Gst.init(None); "
        "missing = [e for e in ('videotestsrc', 'jpegenc', 'rtpjpegpay') if Gst.ElementFactory.find(e) is None]; "
        "assert not missing, missing"
    )
    try:
        r = subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"{SYSTEM_PYTHON}: {e}"
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or ["?"])[-1]
        return f"GStreamer RTSP server not usable ({last}); apt install python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-base gstreamer1.0-plugins-good"
    return None


class RtspServer:
    """tests/support/rtsp_server.py under the system Python: a live RTSP camera that can go away and come back."""

    def __init__(self, port: int, log: Path, *, tcp_only: bool = False) -> None:
        self.port = port
        self.tcp_only = tcp_only
        self.url = f"rtsp://127.0.0.1:{port}/test"
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [SYSTEM_PYTHON, str(RTSP_SERVER), str(self.port), *(["tcp"] if self.tcp_only else [])],
                stdout=log,
                stderr=log,
            )
        assert wait_until(lambda: self.log.read_bytes().count(b"ready") > self.starts, 20), (
            self.log.read_text()
        )
        self.starts += 1

    starts = 0

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None
