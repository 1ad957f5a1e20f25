"""Shared fixtures. `mosquitto`: a real broker subprocess on a free port (see tests.support.broker);
`ocr_engines`: the real PP-OCR detector and recognizer on ONNX Runtime, keyed by model kind."""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edged.infer.base import Engine
from edged.infer.factory import create_engine
from edged.serving.server import ModelServer
from tests.support.broker import MOSQUITTO, Mosquitto
from tests.support.edged import NotifySocket, wait_until
from tests.support.paths import need_models


def _have_mosquitto() -> bool:
    return os.access(MOSQUITTO, os.X_OK) or shutil.which(MOSQUITTO) is not None


@pytest.fixture
def mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A running anonymous broker on 127.0.0.1:<free port>; the test may stop/kill/start it again."""
    if not _have_mosquitto():
        pytest.skip(f"mosquitto not installed ({MOSQUITTO})")
    broker = Mosquitto(Path(tmp_path_factory.mktemp("mosquitto")))
    with broker:
        yield broker


@pytest.fixture
def persistent_mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """Like `mosquitto`, with persistence saved on every change: sessions and queued QoS 1 messages
    of persistent subscribers survive even a SIGKILL of the broker."""
    if not _have_mosquitto():
        pytest.skip(f"mosquitto not installed ({MOSQUITTO})")
    broker = Mosquitto(Path(tmp_path_factory.mktemp("mosquitto")), persistence=True)
    with broker:
        yield broker


@pytest.fixture(scope="session")
def ocr_engines() -> dict[str, Engine]:
    d = need_models()
    return {
        "ppocr_det": create_engine("det", d / "PP-OCRv6_det_small.onnx", "onnxruntime"),
        "ppocr_rec": create_engine("rec", d / "PP-OCRv6_rec_small.onnx", "onnxruntime"),
    }


@pytest.fixture(scope="module")
def servers(ocr_engines: dict[str, Engine]) -> Iterator[dict[str, ModelServer]]:
    """Started model servers (CPU, `tests.support.chain.serve`) over the real detector and recognizer,
    keyed "det" and "rec", shared by one test module."""
    from tests.support.chain import serve

    made = {
        "det": serve("ppocr_det", ocr_engines["ppocr_det"]),
        "rec": serve("ppocr_rec", ocr_engines["ppocr_rec"]),
    }
    yield made
    for s in made.values():
        s.close()


@pytest.fixture
def notify() -> Iterator[NotifySocket]:
    """A real sd_notify socket (NOTIFY_SOCKET for an `edged run` subprocess)."""
    sock = NotifySocket()
    yield sock
    sock.close()


@pytest.fixture(autouse=True)
def _no_outbox_left_open() -> Iterator[None]:
    """An outbox a test leaves open keeps its `outbox:io` thread watching a folder the next test (or
    the test's next outbox on the same folder) changes, and logs its losses into that test. Fails the
    test that left it."""
    before = set(threading.enumerate())

    def left() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "outbox:io" and t not in before]

    yield
    assert wait_until(lambda: not left(), 2.0, step=0.05), (
        f"{len(left())} outbox(es) left open by this test (close them: `with Outbox(...)`)"
    )
