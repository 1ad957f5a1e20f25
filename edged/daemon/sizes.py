"""Camera resolutions learnt from the frames, so the next start declares the model shapes the cameras
really need (issue 28, item 5).

A limit_side detector declares one canvas per camera resolution (edged.serving.shapes). A camera whose
config names no `width`/`height` leaves the detector with three default sizes (1920x1080, 1280x720,
640x480): on a GPU backend each is warmed (and each is a TensorRT profile and an ONNX Runtime CUDA
session, with its weights and arena), for sizes the camera never sends. `LearntSizes` records each
camera's real resolution, with the source it came from, in `<state_dir>/source_sizes.json` when its
first frame arrives; the supervisor declares those from the next start on (a changed source forgets
its size). Until then a frame of a size not declared is padded into, or scaled into, a declared one.

Threads: the daemon's main loop calls `observe` (a few times a second) and the supervisor reads
`size_for` while loading models (also the main thread). Writes are atomic (edged.fileio).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from edged.fileio import atomic_write

log = logging.getLogger("edged")


class LearntSizes:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._sizes: dict[str, dict[str, object]] = {}
        try:
            data = json.loads(path.read_text())
            if isinstance(data, dict):
                self._sizes = {k: v for k, v in data.items() if isinstance(v, dict)}
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as e:  # a damaged file costs only the defaults at this start
            log.warning("%s: cannot read the learnt camera sizes (%s); starting without them", path, e)

    def size_for(self, camera: str, source: str) -> tuple[int, int] | None:
        """The resolution `camera` sent last time from this same `source`, or None."""
        entry = self._sizes.get(camera)
        if not entry or entry.get("source") != source:
            return None
        w, h = entry.get("width"), entry.get("height")
        return (w, h) if isinstance(w, int) and isinstance(h, int) and w > 0 and h > 0 else None

    def observe(self, camera: str, source: str, width: int, height: int) -> bool:
        """A frame of `camera` arrived at width x height; True when that was news (recorded)."""
        if self.size_for(camera, source) == (width, height):
            return False
        self._sizes[camera] = {"source": source, "width": width, "height": height}
        try:
            atomic_write(self.path, json.dumps(self._sizes, indent=1, sort_keys=True).encode())
        except OSError as e:
            log.warning("%s: cannot record camera %s's size: %s", self.path, camera, e)
            return True
        log.info(
            "camera %s: %dx%d frames; its models declare that size from the next start (%s)",
            camera,
            width,
            height,
            self.path,
        )
        return True
