"""A tiny RTSP server for tests: `/usr/bin/python3 tests/support/rtsp_server.py PORT [tcp]` serves rtsp://127.0.0.1:PORT/test
(with `tcp`: RTP over the RTSP connection only, as behind a NAT or a strict firewall: UDP setups are refused).

Runs under the SYSTEM Python (GStreamer's introspection bindings, python3-gi + gir1.2-gst-rtsp-server-1.0,
live there, not in the virtualenv) as a separate process, so a test can stop and restart the "camera".
The stream is a live 320x240 test pattern at 10 fps, Motion-JPEG over RTP (plugins-base/-good only).
Prints "ready" on stdout once it listens.
"""

import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
gi.require_version("GstRtsp", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

PIPELINE = (
    "( videotestsrc is-live=true pattern=ball ! video/x-raw,format=I420,width=320,height=240,framerate=10/1 "
    "! jpegenc quality=80 ! rtpjpegpay name=pay0 pt=26 )"
)


def main() -> None:
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(sys.argv[1])
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(PIPELINE)
    factory.set_shared(True)
    if sys.argv[2:] == ["tcp"]:
        factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP)
    server.get_mount_points().add_factory("/test", factory)
    if server.attach(None) == 0:
        print(f"cannot listen on port {sys.argv[1]}", file=sys.stderr, flush=True)
        sys.exit(1)
    print("ready", flush=True)
    GLib.MainLoop().run()


if __name__ == "__main__":
    main()
