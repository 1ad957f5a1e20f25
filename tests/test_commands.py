"""MQTT commands: the pure parser (property-tested) and a real broker driving a real `edged run`."""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edged.daemon.commands import MAX_PAYLOAD, CommandError, CommandQueue, SetEnabled, Snapshot, parse_command
from tests.support.broker import Mosquitto, free_port
from tests.support.clients import Subscriber
from tests.support.edged import (
    EdgedProcess,
    camera,
    http_get,
    metric,
    small_sample,
    stats,
    up,
    wait_until,
    write_config,
)

CAMERAS = {"gate", "yard"}


@given(st.text(max_size=70), st.text(max_size=70), st.binary(max_size=2 * MAX_PAYLOAD))
def test_parse_command_never_raises(cam: str, command: str, payload: bytes) -> None:
    result = parse_command(cam, command, payload, CAMERAS)
    assert isinstance(result, SetEnabled | Snapshot | CommandError)
    if isinstance(result, CommandError):
        assert result.reason and "\n" not in result.reason
    else:
        assert result.camera in CAMERAS and len(payload) <= MAX_PAYLOAD


@given(
    st.sampled_from(["on", "off", "true", "false", "1", "0"]).flatmap(
        lambda w: st.tuples(st.just(w), st.lists(st.booleans(), min_size=len(w), max_size=len(w)))
    ),
    st.sampled_from(["", " ", "\n", "\t "]),
)
def test_enabled_values_any_case_and_padding(word_case: tuple[str, list[bool]], pad: str) -> None:
    word, upper = word_case
    text = pad + "".join(c.upper() if u else c for c, u in zip(word, upper, strict=True)) + pad
    result = parse_command("gate", "enabled", text.encode(), CAMERAS)
    assert result == SetEnabled("gate", word in ("on", "true", "1"))


@pytest.mark.parametrize(
    ("cam", "command", "payload", "reason"),
    [
        ("nope", "enabled", b"ON", "unknown camera 'nope'"),
        ("gate", "reboot", b"1", "unknown command 'reboot'"),
        ("gate", "enabled", b"\xff\xfe", "not valid UTF-8"),
        ("gate", "enabled", b"maybe", "'maybe' is not one of"),
        ("gate", "enabled", b"", "'' is not one of"),
        ("gate", "snapshot", b"x" * (MAX_PAYLOAD + 1), "payload too long"),
        ("gate", "enabled/extra", b"ON", "unknown command"),
    ],
)
def test_refusals_name_the_reason(cam: str, command: str, payload: bytes, reason: str) -> None:
    result = parse_command(cam, command, payload, CAMERAS)
    assert isinstance(result, CommandError) and reason in result.reason, result


def test_snapshot_takes_any_small_payload() -> None:
    assert parse_command("yard", "snapshot", b"\xff\x00anything", CAMERAS) == Snapshot("yard")


@given(st.text(max_size=40), st.text(max_size=40), st.binary(max_size=64))
def test_queue_offer_never_raises(cam: str, command: str, payload: bytes) -> None:
    q = CommandQueue("edged/test", CAMERAS)
    result = q.offer(cam, command, payload)
    if not isinstance(result, CommandError):
        assert q.get(0) == result


def test_queue_refuses_a_flood(caplog: pytest.LogCaptureFixture) -> None:
    q = CommandQueue("edged/test", CAMERAS)
    results = [q.offer("gate", "snapshot", b"") for _ in range(200)]
    refused = [r for r in results if isinstance(r, CommandError)]
    assert refused and all("too many commands" in r.reason for r in refused)
    assert sum(1 for _ in iter(lambda: q.get(0), None)) == 200 - len(refused)
    with caplog.at_level(logging.WARNING, "edged.daemon.commands"):
        q.offer("gate\x1b[2J", "enabled", b"x")
    assert "gate\\x1b[2J" in caplog.text  # control characters never reach the log raw


# -- the real thing: broker + edged subprocess ----------------------------------------------------------


def test_commands_on_a_running_daemon(tmp_path: Path, mosquitto: Mosquitto) -> None:
    video = small_sample(tmp_path)
    health = free_port()
    config = write_config(
        tmp_path,
        {"gate": camera(video, fps=4)},
        health_port=health,
        broker_port=mosquitto.port,
        commands=True,
    )
    frames = lambda: metric(health, "edged_frames_total", 'camera="gate"') or 0.0  # noqa: E731
    with Subscriber(mosquitto, ["edged/test/#"]) as sub:

        def state() -> bytes | None:
            msgs = sub.on("edged/test/gate/enabled")
            return msgs[-1].payload if msgs else None

        def send(command: str, payload: bytes, cam: str = "gate") -> None:
            sub.client.publish(f"edged/test/{cam}/set/{command}", payload, qos=1).wait_for_publish(5)

        proc = EdgedProcess(config)
        try:
            assert wait_until(lambda: up(health), 60), proc.text()
            assert wait_until(lambda: state() == b"ON" and frames() > 0, 30), proc.text()
            with Subscriber(mosquitto, "edged/test/gate/enabled") as late:  # dashboards see it later
                assert late.wait_for(lambda m: [(x.payload, x.retain) for x in m] == [(b"ON", True)], 5)

            send("enabled", b"OFF")
            assert wait_until(lambda: state() == b"OFF", 15), proc.text()
            # Listed as disabled, not gone: monitoring sees the state.
            assert stats(health)["cameras"]["gate"]["state"] == "disabled"
            assert stats(health)["cameras"]["gate"]["disabled_by"] == "command"
            ready = json.loads(http_get(health, "/readyz")[1])
            assert ready["cameras"]["gate"] == {"ok": True, "state": "disabled", "disabled_by": "command"}
            stopped_at = frames()
            # No frame may be taken while disabled (the runner and its capture are stopped).
            assert not wait_until(lambda: frames() > stopped_at, 2.0), "frames kept coming while disabled"

            send("enabled", b" true\n")
            assert wait_until(lambda: state() == b"ON", 15), proc.text()
            assert wait_until(lambda: frames() > stopped_at, 15), "frames did not resume"

            send("snapshot", b"")
            assert sub.wait_for(lambda m: any(x.topic == "edged/test/gate/snapshot" for x in m), 15)
            snap = sub.on("edged/test/gate/snapshot")[0]
            assert snap.payload[:2] == b"\xff\xd8" and snap.payload[-2:] == b"\xff\xd9" and not snap.retain

            garbage = [
                ("enabled", b"\xff\xfe", "gate", "not valid UTF-8"),
                ("enabled", b"maybe", "gate", "is not one of"),
                ("enabled", b"1" * 5000, "gate", "payload too long"),
                ("reboot", b"now", "gate", "unknown command 'reboot'"),
                ("enabled", b"OFF", "ghost", "unknown camera 'ghost'"),
            ]
            for command, payload, cam, _ in garbage:
                send(command, payload, cam)
            for command, _, cam, reason in garbage:
                line = f"MQTT command on edged/test/{cam}/set/{command} refused: "
                assert wait_until(
                    lambda line=line, reason=reason: line + "" in proc.text() and reason in proc.text(), 10
                ), f"no warning for {cam}/{command}: {proc.text()[-2000:]}"
            n = frames()
            assert proc.alive and up(health)
            assert wait_until(lambda: frames() > n, 10), "garbage stopped the camera"
            assert state() == b"ON"
            assert proc.stop(signal.SIGTERM) == 0
        finally:
            proc.kill()
    log = proc.text()
    assert "Traceback" not in log
    assert log.count("command: stopping camera gate") == 1 and log.count("command: starting camera gate") == 1
