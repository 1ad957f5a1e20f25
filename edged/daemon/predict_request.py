"""What a POST /predict request asks for, read from its body: the pictures, the camera (or a chain) and
the options, in any of three forms (docs/predict.md):

- a JPEG or PNG as the body (`Content-Type: image/jpeg` or `image/png`), options in the query string:
  `POST /predict?camera=gate&confidence_threshold=0.5&publish=true`;
- `multipart/form-data` (`curl -F image=@a.jpg -F image=@b.png -F camera=gate`): every file part is a
  picture, the other parts are options (`chain` as JSON text);
- JSON in DeepDetect's shape: `{"service": "gate", "parameters": {"output": {"confidence_threshold":
  0.5}}, "data": ["<base64>", ...]}`, plus `camera` (same as `service`), `chain` and `publish`.

Pictures are checked before they are decoded: JPEG or PNG by their signature, width x height from the
header against `max_pixels` (a small PNG can announce a picture of gigabytes). Every refusal is a
`RequestError` with the HTTP status and one sentence naming what is wrong.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from dataclasses import dataclass, field, replace
from email import policy
from email.parser import BytesParser
from typing import Any
from urllib.parse import parse_qs

import numpy as np

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic): they carry the size.
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
JSON_KEYS = {"service", "camera", "chain", "data", "parameters", "publish"}


class RequestError(Exception):
    """A request edged cannot answer: `code` is its HTTP status (400, 404, 413, ...)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class PredictRequest:
    images: list[bytes]
    camera: str | None = None
    chain: Any = None  # a chain as sent (validated against the config schema by the caller)
    confidence_threshold: float | None = None
    publish: bool = False
    ignored: list[str] = field(default_factory=list)  # DeepDetect parameters that have no meaning here


def parse_request(query: str, content_type: str, body: bytes, max_images: int) -> PredictRequest:
    mime = content_type.split(";", 1)[0].strip().lower()
    options = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()}
    if mime in ("image/jpeg", "image/png", "application/octet-stream"):
        req = _options(PredictRequest([body]), options)
    elif mime == "multipart/form-data":
        req = _multipart(content_type, body, options)
    elif mime == "application/json":
        req = _json(body, options)
    else:
        raise RequestError(
            415,
            f"Content-Type {mime or '(none)'!r}: send image/jpeg, image/png, multipart/form-data "
            "or application/json (docs/predict.md)",
        )
    if not req.images or not any(req.images):
        raise RequestError(400, "no picture in the request")
    if len(req.images) > max_images:
        raise RequestError(413, f"{len(req.images)} pictures in one request; at most {max_images}")
    return req


def _options(req: PredictRequest, options: dict[str, Any]) -> PredictRequest:
    """Query string or form fields: camera (or service), chain (JSON), confidence_threshold, publish."""
    fields: dict[str, Any] = {}
    for key, value in options.items():
        if key in ("camera", "service"):
            fields["camera"] = str(value)
        elif key == "chain":
            try:
                fields["chain"] = json.loads(value) if isinstance(value, str) else value
            except ValueError as e:
                raise RequestError(400, f"chain: not JSON ({e})") from None
        elif key == "confidence_threshold":
            fields["confidence_threshold"] = _threshold(value)
        elif key == "publish":
            fields["publish"] = _flag(value)
        else:
            raise RequestError(
                400, f"unknown option {key!r} (camera, service, chain, confidence_threshold, publish)"
            )
    return replace(req, **fields)


def _threshold(value: Any) -> float:
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise RequestError(400, f"confidence_threshold: not a number: {value!r}") from None
    if not 0.0 <= t <= 1.0:
        raise RequestError(400, f"confidence_threshold: {t:g} is not between 0 and 1")
    return t


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("", "0", "false", "no", "off"):
        return False
    raise RequestError(400, f"publish: not a yes/no value: {value!r}")


def _multipart(content_type: str, body: bytes, options: dict[str, Any]) -> PredictRequest:
    head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", errors="replace")
    msg = BytesParser(policy=policy.HTTP).parsebytes(head + body)
    if not msg.is_multipart() or msg.defects:
        raise RequestError(400, "multipart/form-data body cannot be read (boundary?)")
    images: list[bytes] = []
    for part in msg.iter_parts():
        data = part.get_payload(decode=True)
        payload = data if isinstance(data, bytes) else b""
        if part.get_filename() is not None or part.get_content_maintype() == "image":
            images.append(payload)
        else:
            name = part.get_param("name", header="content-disposition")
            if not isinstance(name, str) or not name:
                raise RequestError(400, "a multipart field without a name")
            options[name] = payload.decode("utf-8", errors="replace")
    return _options(PredictRequest(images), options)


def _json(body: bytes, options: dict[str, Any]) -> PredictRequest:
    try:
        doc = json.loads(body)
    except ValueError as e:
        raise RequestError(400, f"body is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise RequestError(400, "the JSON body must be an object with `data` (pictures in base64)")
    unknown = sorted(set(doc) - JSON_KEYS)
    if unknown:
        raise RequestError(
            400, f"unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(JSON_KEYS))})"
        )
    data = doc.get("data")
    if not isinstance(data, list) or not all(isinstance(d, str) for d in data):
        raise RequestError(400, "`data` must be a list of pictures in base64 (or data: URIs)")
    images = [_base64(d, i) for i, d in enumerate(data)]
    opts = {**options, **{k: doc[k] for k in ("service", "camera", "chain", "publish") if k in doc}}
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise RequestError(400, "`parameters` must be an object")
    output = params.get("output") or {}
    if not isinstance(output, dict):
        raise RequestError(400, "`parameters.output` must be an object")
    if "confidence_threshold" in output:
        opts["confidence_threshold"] = output["confidence_threshold"]
    ignored = sorted(
        [f"parameters.{k}" for k in params if k != "output"]
        + [f"parameters.output.{k}" for k in output if k != "confidence_threshold"]
    )
    return _options(PredictRequest(images, ignored=ignored), opts)


def _base64(text: str, index: int) -> bytes:
    if text.startswith("data:"):  # data:image/png;base64,....
        _, _, text = text.partition(",")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise RequestError(
            400, f"data[{index}]: not base64 (URLs and file paths are not fetched: send the picture)"
        ) from None


def picture_size(data: bytes) -> tuple[str, int, int]:
    """(format, width, height) from a JPEG or PNG header, without decoding; ValueError otherwise."""
    if data.startswith(PNG_SIGNATURE):
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise ValueError("a PNG without its header")
        width, height = struct.unpack(">II", data[16:24])
        return "png", int(width), int(height)
    if data.startswith(b"\xff\xd8"):
        i = 2
        while i + 4 <= len(data):
            if data[i] != 0xFF:
                raise ValueError("a JPEG with a broken marker")
            marker = data[i + 1]
            if marker == 0xFF:  # fill byte
                i += 1
                continue
            if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
                i += 2
                continue
            (length,) = struct.unpack(">H", data[i + 2 : i + 4])
            if marker in _SOF:
                if i + 9 > len(data):
                    break
                height, width = struct.unpack(">HH", data[i + 5 : i + 9])
                return "jpeg", int(width), int(height)
            if marker == 0xDA or length < 2:  # scan data before any frame header: not a picture
                break
            i += 2 + length
        raise ValueError("a JPEG without a frame header")
    raise ValueError("not a JPEG or PNG picture")


def decode_picture(data: bytes, index: int, max_pixels: int) -> np.ndarray:
    """The picture as HWC uint8 BGR (what a camera delivers); RequestError 400 or 413 naming it."""
    import cv2

    try:
        kind, width, height = picture_size(data)
    except ValueError as e:
        raise RequestError(400, f"picture {index}: {e}") from None
    if width < 1 or height < 1:
        raise RequestError(400, f"picture {index}: {kind} of {width}x{height} pixels")
    if width * height > max_pixels:
        raise RequestError(
            413,
            f"picture {index}: {width}x{height} is over the limit of {max_pixels} pixels (health.predict.max_pixels)",
        )
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise RequestError(400, f"picture {index}: the {kind} cannot be decoded")
    return np.ascontiguousarray(image)
