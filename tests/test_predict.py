"""POST /predict and `edged predict` on a real `edged run` (real PP-OCR models, real HTTP, real curl, a
real mosquitto): the same detections as the camera path for the same frames, the limits (413, 429,
400, 404, 415 with a JSON reason), nothing published unless asked, the cameras unaffected and the
daemon's memory flat over 1000 requests."""

from __future__ import annotations

import base64
import http.client
import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edged.daemon.predict_request import RequestError, parse_request, picture_size
from tests.support.broker import MOSQUITTO, Mosquitto, free_port
from tests.support.clients import Subscriber
from tests.support.edged import EdgedProcess, det_model, http_get, small_sample, stats, wait_until
from tests.support.paths import ROOT, need_models

MAX_BODY = 1024 * 1024
MAX_PIXELS = 400 * 300  # the 320x240 sample fits, a 640x480 picture does not
MAX_IMAGES = 4
OCR = [{"model": "text_det", "min_score": 0.5}, {"model": "text_rec", "on": "text_det"}]
TINY_CHAIN = json.dumps([{"model": "text_cls"}])  # the angle classifier on the whole (tiny) picture


class Daemon:
    def __init__(self, proc: EdgedProcess, port: int, broker: Mosquitto, sample: Path) -> None:
        self.proc, self.port, self.broker, self.sample = proc, port, broker, sample

    def post(
        self, body: bytes, ctype: str, query: str = "", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(
                "POST", f"/predict{query}", body=body, headers={"Content-Type": ctype, **(headers or {})}
            )
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())
        finally:
            conn.close()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    if not Path(MOSQUITTO).exists() and shutil.which(MOSQUITTO) is None:
        pytest.skip(f"mosquitto not installed ({MOSQUITTO})")
    tmp = tmp_path_factory.mktemp("predict")
    models = need_models()
    sample = small_sample(tmp, frames=14)  # 320x240
    one_thread = {"onnxruntime": {"intra_op_threads": 1, "inter_op_threads": 1}}
    port = free_port()
    broker = Mosquitto(tmp / "mosquitto").start()
    cfg = {
        "device": {"name": "test"},
        "state_dir": str(tmp / "state"),
        "mqtt": {
            "host": "127.0.0.1",
            "port": broker.port,
            "reconnect_min_s": 0.2,
            "reconnect_max_s": 1,
            "outbox": {"dir": str(tmp / "outbox")},
        },
        "health": {
            "port": port,
            "predict": {
                "enabled": True,
                "max_body_bytes": MAX_BODY,
                "max_pixels": MAX_PIXELS,
                "max_images": MAX_IMAGES,
                "max_in_flight": 1,
                "timeout_s": 30,
            },
        },
        "models": {
            "text_det": det_model(),
            "text_rec": {
                "path": str(models / "PP-OCRv6_rec_small.onnx"),
                "kind": "ppocr_rec",
                "batching": {"max_batch": 4, "widths": [320, 640]},  # few shapes to warm: a quick start
                **one_thread,
            },
            "text_cls": {
                "path": str(models / "ch_ppocr_mobile_v2.0_cls_mobile.onnx"),
                "kind": "ppocr_cls",
                **one_thread,
            },
        },
        "cameras": {
            # Every frame of the file once, none dropped: the camera path's events to compare with.
            "gate": {"source": f"file://{sample}", "fps": 10, "loop": False, "realtime": False, "chain": OCR},
            # A live camera that must keep running while /predict is busy.
            "live": {
                "source": f"file://{sample}",
                "fps": 2,
                "loop": True,
                "realtime": True,
                "chain": [{"model": "text_det", "min_score": 0.5}],
            },
        },
    }
    path = tmp / "edged.yaml"
    path.write_text(json.dumps(cfg))
    proc = EdgedProcess(path)
    try:
        n = len(frames(sample))

        def gate_done() -> bool:  # the file ended and every frame of it left the chain
            gate = stats(port).get("cameras", {}).get("gate", {})
            return gate.get("state") == "ended" and gate.get("frames_processed") == n

        assert wait_until(gate_done, 120), proc.text()[-3000:]
        yield Daemon(proc, port, broker, sample)
    finally:
        proc.kill()
        broker.kill()


def frames(sample: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(sample))
    out = []
    while True:
        ok, img = cap.read()
        if not ok:
            return out
        out.append(img)


def png(img: np.ndarray) -> bytes:
    return bytes(cv2.imencode(".png", img)[1])


def multipart(files: list[bytes], fields: dict[str, str]) -> tuple[bytes, str]:
    boundary = "edged-test-boundary"
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in fields.items()
    ]
    for i, data in enumerate(files):
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{i}.png"\r\n'
            "Content-Type: image/png\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


# --- the request, without a daemon ------------------------------------------------------------------


@pytest.mark.parametrize(("ext", "size"), [(".png", (33, 17)), (".jpg", (320, 240)), (".jpg", (1, 1))])
def test_picture_size_is_read_from_the_header(ext: str, size: tuple[int, int]) -> None:
    w, h = size
    data = bytes(cv2.imencode(ext, np.full((h, w, 3), 127, np.uint8))[1])
    kind, width, height = picture_size(data)
    assert (width, height) == size and kind == ("png" if ext == ".png" else "jpeg")
    with pytest.raises(ValueError):
        picture_size(data[:10])
    with pytest.raises(ValueError, match="not a JPEG or PNG"):
        picture_size(b"GIF89a" + data)


def test_a_deepdetect_request_maps_its_fields() -> None:
    body = {
        "service": "gate",
        "parameters": {"input": {"width": 224}, "output": {"confidence_threshold": 0.3, "best": 3}},
        "data": [
            base64.b64encode(b"\x89PNG...").decode(),
            "data:image/png;base64," + base64.b64encode(b"x").decode(),
        ],
    }
    req = parse_request("", "application/json", json.dumps(body).encode(), max_images=4)
    assert req.camera == "gate" and req.confidence_threshold == 0.3 and req.images == [b"\x89PNG...", b"x"]
    assert req.ignored == ["parameters.input", "parameters.output.best"]
    for bad, code, words in [
        ({"data": ["http://example.com/a.jpg"]}, 400, "not base64"),
        ({"data": ["eA=="], "url": 1}, 400, "unknown field(s) url"),
        ({"data": ["eA=="] * 5}, 413, "5 pictures"),
        (
            {"data": ["eA=="], "parameters": {"output": {"confidence_threshold": 2}}},
            400,
            "not between 0 and 1",
        ),
    ]:
        with pytest.raises(RequestError, match=re.escape(words)) as e:
            parse_request("", "application/json", json.dumps(bad).encode(), max_images=4)
        assert e.value.code == code


# --- a real daemon ---------------------------------------------------------------------------------


def test_predict_finds_what_the_camera_found_in_the_same_frames(daemon: Daemon) -> None:
    camera = {e["seq"]: e for e in daemon.proc.events() if e["camera"] == "gate"}
    pictures = frames(daemon.sample)
    assert len(camera) >= 8, f"the camera published only {len(camera)} events"
    seqs = list(range(len(pictures)))
    compared = 0
    for i in range(0, len(seqs), MAX_IMAGES):  # up to 4 frames per request: batched like cameras
        batch = seqs[i : i + MAX_IMAGES]
        body, ctype = multipart([png(pictures[s]) for s in batch], {"camera": "gate"})
        code, answer = daemon.post(body, ctype)
        assert code == 200, answer
        assert answer["camera"] == "gate" and answer["chain"] == ["text_det", "text_rec"]
        assert answer["published"] == 0 and len(answer["events"]) == len(batch)
        for s, event in zip(batch, answer["events"], strict=True):
            assert event["schema"] == "edged.detections/1" and event["camera"] == "gate"
            assert event["frame"] == {"width": 320, "height": 240}
            # The camera publishes frames with detections only: the others must have none here too.
            assert event["detections"] == (camera[s]["detections"] if s in camera else []), s
            compared += s in camera
    assert compared == len(camera)
    # The same through DeepDetect's JSON and through the CLI, which sends that JSON.
    s = next(iter(camera))
    doc = {"service": "gate", "data": [base64.b64encode(png(pictures[s])).decode()]}
    code, answer = daemon.post(json.dumps(doc).encode(), "application/json")
    assert code == 200 and answer["events"][0]["detections"] == camera[s]["detections"]
    image = daemon.sample.parent / "frame.png"
    image.write_bytes(png(pictures[s]))
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "edged",
            "predict",
            "--url",
            f"http://127.0.0.1:{daemon.port}",
            "--camera",
            "gate",
            "-",
        ],
        input=image.read_bytes(),
        capture_output=True,
        cwd=ROOT,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["events"][0]["detections"] == camera[s]["detections"]
    # A threshold above every score leaves nothing (DeepDetect's output.confidence_threshold).
    code, answer = daemon.post(png(pictures[s]), "image/png", "?camera=gate&confidence_threshold=0.999")
    assert code == 200 and answer["events"][0]["detections"] == []


def test_limits_and_bad_requests_get_a_json_reason(daemon: Daemon) -> None:
    small = png(np.zeros((48, 64, 3), np.uint8))
    cases: list[tuple[bytes, str, str, int, str]] = [
        (b"not a picture at all", "image/png", "?camera=gate", 400, "picture 0: not a JPEG or PNG picture"),
        (small[:40], "image/png", "?camera=gate", 400, "cannot be decoded"),
        (
            png(np.zeros((480, 640, 3), np.uint8)),
            "image/png",
            "?camera=gate",
            413,
            "640x480 is over the limit",
        ),
        (small, "image/png", "?camera=nope", 404, "no camera 'nope' (cameras: gate, live)"),
        (small, "image/png", "", 400, "name a camera"),
        (small, "image/gif", "?camera=gate", 415, "Content-Type 'image/gif'"),
        (
            small,
            "image/png",
            "?chain=" + urllib.parse.quote('[{"model": "nope"}]'),
            400,
            "[0].model: unknown model",
        ),
        (
            small,
            "image/png",
            "?chain=" + urllib.parse.quote('[{"model": "text_det", "min_score": 3}]'),
            400,
            "chain[0].min_score",
        ),
        (b"", "image/png", "?camera=gate", 400, "no picture"),
    ]
    for body, ctype, query, want, words in cases:
        code, answer = daemon.post(body, ctype, query)
        assert (code, answer.get("code")) == (want, want), (query, answer)
        assert words in answer["error"], answer
    body, ctype = multipart([small] * (MAX_IMAGES + 1), {"camera": "gate"})
    code, answer = daemon.post(body, ctype)
    assert code == 413 and f"at most {MAX_IMAGES}" in answer["error"]
    # An oversized body is refused from its Content-Length, before it is read; curl (which asks with
    # Expect: 100-continue for a large body) reads the refusal.
    big = daemon.sample.parent / "big.bin"
    big.write_bytes(b"\0" * (MAX_BODY + 1))
    r = subprocess.run(
        ["curl", "-s", "-w", "\n%{http_code}", "-H", "Content-Type: image/png", "--data-binary", f"@{big}",
         f"http://127.0.0.1:{daemon.port}/predict?camera=gate"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    text, _, status = r.stdout.rpartition("\n")
    assert status == "413" and json.loads(text)["error"] == (
        f"request body of {MAX_BODY + 1} bytes is over the limit of {MAX_BODY}"
    ), r.stdout
    # POST elsewhere is still not allowed.
    conn = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=10)
    conn.request("POST", "/stats", body=b"{}")
    assert conn.getresponse().status == 405
    conn.close()


def test_one_request_too_many_is_429_at_once(daemon: Daemon) -> None:
    # max_in_flight is 1: a request whose body is still arriving holds the one slot.
    held = socket.create_connection(("127.0.0.1", daemon.port), timeout=10)
    held.sendall(
        b"POST /predict?camera=gate HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: 1000\r\n\r\n12345"
    )
    time.sleep(0.3)  # let the server admit it
    try:
        t0 = time.monotonic()
        code, answer = daemon.post(png(np.zeros((48, 64, 3), np.uint8)), "image/png", "?camera=gate")
        assert code == 429 and "1 request(s) to /predict already running" in answer["error"], answer
        assert time.monotonic() - t0 < 2.0  # refused at once, not after a wait
    finally:
        held.close()
    assert wait_until(
        lambda: daemon.post(png(np.zeros((48, 64, 3), np.uint8)), "image/png", "?camera=gate")[0] == 200, 15
    )


def test_published_only_when_asked(daemon: Daemon) -> None:
    picture = png(frames(daemon.sample)[5])
    with Subscriber(daemon.broker, "edged/test/+/predictions") as sub:
        code, answer = daemon.post(picture, "image/png", "?camera=gate")
        assert code == 200 and answer["published"] == 0 and answer["events"][0]["detections"]
        code, answer = daemon.post(picture, "image/png", "?camera=gate&publish=true")
        assert code == 200 and answer["published"] == 1
        assert sub.wait_for(lambda msgs: len(msgs) >= 1, 10)
        time.sleep(0.5)  # anything the first request might have sent would be here by now
        assert [m.topic for m in sub.messages] == ["edged/test/gate/predictions"]
        assert json.loads(sub.messages[0].payload) == answer["events"][0]


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_cameras_run_on_and_memory_stays_flat_over_1000_requests(daemon: Daemon) -> None:
    tiny = png(
        cv2.putText(
            np.zeros((24, 48, 3), np.uint8), "AB", (2, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2
        )
    )
    query = "?camera=gate&chain=" + urllib.parse.quote(TINY_CHAIN)

    def burst(n: int) -> None:
        for _ in range(n):
            code, answer = daemon.post(tiny, "image/png", query)
            assert code == 200 and len(answer["events"]) == 1, answer

    burst(100)  # warm: allocator arenas, the request slot's buffers
    live0 = stats(daemon.port)["cameras"]["live"]
    rss0 = _rss_kib(daemon.proc.proc.pid)
    t0 = time.monotonic()
    burst(1000)
    seconds = time.monotonic() - t0
    rss1 = _rss_kib(daemon.proc.proc.pid)
    live1 = stats(daemon.port)["cameras"]["live"]
    print(f"1000 requests in {seconds:.1f} s; daemon RSS {rss0 / 1024:.1f} -> {rss1 / 1024:.1f} MiB")
    assert rss1 - rss0 < 16 * 1024, f"RSS grew {(rss1 - rss0) / 1024:.1f} MiB over 1000 requests"
    # The live camera went on through its chain meanwhile, with no failed frame.
    assert live1["state"] == "streaming" and live1["drops"]["error"] == 0
    assert live1["frames_processed"] > live0["frames_processed"]
    status, body = http_get(daemon.port, "/readyz")
    assert status == 200, body
    counts = stats(daemon.port)["predict"]
    assert counts["in_flight"] == 0 and counts["max_in_flight"] == 1 and counts["answers"]["200"] >= 1100
