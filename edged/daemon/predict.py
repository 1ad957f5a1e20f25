"""POST /predict (`health.predict.enabled`): pictures through a camera's chain, or a chain sent in the
request, answered with the events that camera would publish (docs/predict.md).

`PredictApi.handle` is the health server's `predict` callable. It reads the request
(edged.daemon.predict_request), finds the chain (the camera's, from the running config, or the one sent,
checked against the loaded models like a camera's chain in the config), runs the pictures with an
`edged.pipeline.predict.Predictor` over the model servers the cameras use, and builds each picture's
event with the camera's event builder code (edged.publish.event). Nothing is published unless the
request asks (`publish`): then the events with detections go through the outbox to
`<prefix>/<camera>/predictions`, never to a camera's `detections` topic.

Every refusal is JSON `{"error": "...", "code": N}`: 400 a bad request or picture, 404 an unknown
camera, 413 too large (body, picture, number of pictures), 415 a content type, 429 every request slot
busy, 503 a model not loaded, 504 no answer within `timeout_s`.

Threads: `handle` runs on the health server's POST pool (at most `max_in_flight` at once); it reads
the supervisor's config and models (copied references: a reload replaces them whole).
"""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from pydantic import TypeAdapter, ValidationError

from edged.config.base import NAME_RE
from edged.config.cameras import CameraConfig, StageConfig, TrackingConfig
from edged.config.schema import PredictConfig, chain_problems
from edged.daemon.predict_request import PredictRequest, RequestError, decode_picture, parse_request
from edged.daemon.supervisor import Supervisor
from edged.pipeline.predict import PredictBusy, Predictor, PredictTimeout
from edged.pipeline.runner import build_stages
from edged.publish.event import RUN_ID, build_event
from edged.publish.mqtt.publisher import MqttPublisher
from edged.serving.queue import ServerClosed
from edged.types import FrameResult

CHANNEL = "predictions"  # <prefix>/<camera>/predictions: never a camera's own detections topic
REQUEST_CAMERA = "predict"  # the events' camera for a chain sent without a camera name
_CHAIN = TypeAdapter(list[StageConfig])


class PredictApi:
    def __init__(
        self,
        cfg: PredictConfig,
        supervisor: Supervisor,
        device: str,
        publisher: Callable[[], MqttPublisher | None],
    ) -> None:
        self.cfg = cfg
        self.supervisor = supervisor
        self.device = device
        self.publisher = publisher
        self.predictor = Predictor(cfg.max_in_flight, cfg.timeout_s)
        self.run_id = f"{RUN_ID}-predict"  # event ids apart from the cameras' own
        self._codes: Counter[int] = Counter()
        self._lock = threading.Lock()

    def status(self) -> dict[str, Any]:
        """For /stats: requests in the chain now, and every answer so far by HTTP status (those the
        health server refused before reading the body, 413 and 429 there, are not counted here)."""
        with self._lock:
            codes = {str(k): v for k, v in sorted(self._codes.items())}
        return {**self.predictor.status(), "answers": codes}

    def handle(self, query: str, content_type: str, body: bytes) -> tuple[int, dict[str, Any]]:
        code, answer = self._handle(query, content_type, body)
        with self._lock:
            self._codes[code] += 1
        return code, answer

    def _handle(self, query: str, content_type: str, body: bytes) -> tuple[int, dict[str, Any]]:
        t0 = time.perf_counter()
        try:
            req = parse_request(query, content_type, body, self.cfg.max_images)
            name, chain = self._chain(req)
            publisher = self.publisher() if req.publish else None
            if req.publish and publisher is None:
                raise RequestError(400, "publish: MQTT is disabled on this device (mqtt.enabled)")
            stages = build_stages(
                CameraConfig.model_construct(
                    source="predict", chain=chain, tracking=TrackingConfig(enabled=False)
                ),
                self.supervisor.models,
            )
            images = [decode_picture(data, i, self.cfg.max_pixels) for i, data in enumerate(req.images)]
            outcomes = self.predictor.run(stages, images)
        except RequestError as e:
            return e.code, {"error": e.message, "code": e.code}
        except PredictBusy as e:
            return 429, {"error": str(e), "code": 429}
        except PredictTimeout as e:
            return 504, {"error": str(e), "code": 504}
        failed = [(i, o) for i, o in enumerate(outcomes) if isinstance(o, BaseException)]
        if failed:
            i, error = failed[0]
            code = 503 if isinstance(error, ServerClosed) else 500
            return code, {"error": f"picture {i}: {type(error).__name__}: {error}", "code": code}
        events = [self._event(name, o) for o in outcomes if isinstance(o, FrameResult)]
        published = 0
        if publisher is not None:
            for event in events:
                if event["detections"]:  # as a camera: one message per frame with detections
                    publisher.publish(name, event, CHANNEL)
                    published += 1
        out: dict[str, Any] = {
            "camera": name,
            "chain": [s.stage_name for s in chain],
            "events": events,
            "published": published,
            "time_ms": round((time.perf_counter() - t0) * 1000.0, 2),
        }
        if req.ignored:
            out["ignored"] = req.ignored
        return 200, out

    def _chain(self, req: PredictRequest) -> tuple[str, list[StageConfig]]:
        """The events' camera name and the chain to run (with the request's threshold)."""
        cameras = self.supervisor.cfg.cameras
        if req.chain is not None:
            chain = self._sent_chain(req.chain)
            name = req.camera or REQUEST_CAMERA
            if not _valid_name(name):
                raise RequestError(400, f"camera: {name!r} is not a name (letters, digits, _ and -)")
        else:
            if req.camera is None:
                if len(cameras) != 1:
                    known = ", ".join(cameras) or "none"
                    raise RequestError(400, f"name a camera (camera=...) or send a chain; cameras: {known}")
                req.camera = next(iter(cameras))
            name = req.camera
            cam = cameras.get(name)
            if cam is None:
                known = ", ".join(cameras) or "none"
                raise RequestError(404, f"no camera {name!r} (cameras: {known})")
            if not cam.chain:
                raise RequestError(400, f"camera {name!r} has no chain (no models) to run")
            chain = list(cam.chain)
        missing = sorted({s.model for s in chain} - set(self.supervisor.models))
        if missing:
            raise RequestError(503, f"model(s) not loaded: {', '.join(missing)} (see /stats)")
        if req.confidence_threshold is not None:  # DeepDetect's output.confidence_threshold: the detector's
            chain[0] = chain[0].model_copy(update={"min_score": req.confidence_threshold})
        return name, chain

    def _sent_chain(self, raw: Any) -> list[StageConfig]:
        try:
            chain = _CHAIN.validate_python(raw)
        except ValidationError as e:
            err = e.errors()[0]
            where = "chain" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
            raise RequestError(400, f"{where}: {err['msg']}") from None
        if not chain:
            raise RequestError(400, "chain: at least one stage")
        problems = chain_problems(chain, self.supervisor.cfg.models)
        if problems:
            loc, msg = problems[0]
            where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
            raise RequestError(400, f"{where}: {msg}")
        return chain

    def _event(self, name: str, result: FrameResult) -> dict[str, Any]:
        """The event the camera would publish for this picture (its camera's name, an id of its own)."""
        frame = dataclasses.replace(result.frame, camera=name)
        return build_event(dataclasses.replace(result, frame=frame), self.device, self.run_id)


def _valid_name(name: str) -> bool:
    return re.fullmatch(NAME_RE, name) is not None
