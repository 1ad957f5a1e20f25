"""Capture: turn a source URI into a `Source`, and run it in a `CameraCapture` thread per camera.

make_source("file://samples/plates.mp4", base_dir=config_dir)   # FFmpeg via PyAV (jetson-utils on a Jetson)
make_source("samples/frames/*.jpg")                              # bare paths, folders/ and globs too
make_source("rtsp://cam/stream", decode="auto")                  # NVDEC where it works, else the CPU
cam = CameraCapture("gate", lambda: make_source(uri), fps=10, metrics=metrics); cam.start()
frame = cam.get(timeout_s=1.0)                                   # newest frame, or None
"""
