"""Live model update on a real `edged run` (real PP-OCR det -> rec, real mosquitto, real SIGHUP, real
HTTP): an agreeing recognizer file is shadow-checked and switched in without a lost, repeated or
reordered event and with the same reads; a disagreeing one (PP-OCRv4, other characters) is refused and
reported while the old one serves on; MQTT commands naming bad files are refused with one reply each;
`force` switches the disagreeing model, `rollback` brings the original reads back."""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edged.daemon.commands import CommandError, ModelCommand, parse_command
from edged.daemon.switching import resolve_candidate
from tests.support.broker import Mosquitto, free_port
from tests.support.clients import Subscriber
from tests.support.edged import (
    EdgedProcess,
    det_model,
    metric,
    small_sample,
    stats,
    up,
    wait_until,
    write_ocr_config,
)
from tests.support.paths import need_models
from tests.test_shadow import v4_recognizer
from tests.test_status_page import CHROMIUM, chromium, visible_text

FRAMES = 12  # of the looped sample video
SHADOW = FRAMES  # requests both engines run before deciding: a whole loop, every plate seen
MODEL = "text_rec"


def read_texts(event: dict[str, Any]) -> list[str]:
    return sorted(
        k["label"] for d in event["detections"] for kids in d.get("children", {}).values() for k in kids
    )


def replace_file(dest: Path, source: Path) -> None:
    """What an operator's deploy does: the new content appears at once (never a half-written file)."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.copyfile(source, tmp)
    os.replace(tmp, dest)


# -- pure parts ----------------------------------------------------------------------------------------


def test_model_commands_parse_with_the_path_as_payload() -> None:
    models, cams = {"text_rec"}, {"gate"}
    assert parse_command("text_rec", "update", b" rec-v2.onnx\n", cams, models) == ModelCommand(
        "text_rec", "update", "rec-v2.onnx"
    )
    assert parse_command("text_rec", "rollback", b"anything", cams, models) == ModelCommand(
        "text_rec", "rollback"
    )
    for payload, model, reason in (
        (b"x.onnx", "nope", "unknown model 'nope'"),
        (b"\xff", "text_rec", "not valid UTF-8"),
        (b"x" * 2000, "text_rec", "payload too long"),
    ):
        result = parse_command(model, "force", payload, cams, models)
        assert isinstance(result, CommandError) and reason in result.reason, result
    # camera commands are unchanged, even for a camera named like a model
    assert isinstance(parse_command("text_rec", "enabled", b"ON", cams, models), CommandError)


def test_candidate_files_must_be_in_the_model_folders(tmp_path: Path) -> None:
    from edged.config.inference import ModelConfig

    (tmp_path / "models").mkdir()
    (tmp_path / "extra").mkdir()
    for name in ("models/a.onnx", "models/b.onnx", "extra/c.onnx", "outside.onnx"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "models" / "escape.onnx").symlink_to(tmp_path / "outside.onnx")
    m = ModelConfig.model_validate(
        {"path": tmp_path / "models/a.onnx", "kind": "ppocr_rec", "update": {"folders": [tmp_path / "extra"]}}
    )
    assert resolve_candidate("rec", m, "b.onnx") == ((tmp_path / "models/b.onnx").resolve(), "")
    assert resolve_candidate("rec", m, str(tmp_path / "extra/c.onnx"))[1] == ""
    for text, reason in (
        (str(tmp_path / "outside.onnx"), "is outside the model folder(s) of models.rec"),
        ("../outside.onnx", "is outside the model folder(s)"),
        ("escape.onnx", "is outside the model folder(s)"),  # a link out of the folder is not a way out
        ("missing.onnx", "no such file"),
        ("", "must name the new model file"),
    ):
        path, why = resolve_candidate("rec", m, text)
        assert path is None and reason in why, (text, why)


# -- the real daemon -----------------------------------------------------------------------------------


@pytest.fixture
def daemon(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[tuple[EdgedProcess, int, Path]]:
    folder = tmp_path / "models"
    folder.mkdir()
    rec = folder / "rec.onnx"
    shutil.copyfile(need_models() / "PP-OCRv6_rec_small.onnx", rec)
    health = free_port()
    video = small_sample(tmp_path, frames=FRAMES)
    config = write_ocr_config(
        tmp_path,
        video,
        broker_port=mosquitto.port,
        health_port=health,
        mqtt={"commands": True, "stats_interval_s": 1},
        fps=30,
        realtime=False,  # every frame is processed, none dropped: a lost event is a bug
        loop=True,
    )
    cfg = json.loads(config.read_text())
    cpu = {"intra_op_threads": 1, "inter_op_threads": 1, "providers": ["CPUExecutionProvider"]}
    cache = {"cache_dir": str(tmp_path / "cache")}
    cfg["models"] = {
        "text_det": {**det_model(), "onnxruntime": cpu, "tensorrt": cache},
        MODEL: {
            "path": str(rec),
            "kind": "ppocr_rec",
            "onnxruntime": cpu,
            "tensorrt": cache,
            "update": {"shadow_frames": SHADOW},
            # Few declared shapes: every candidate is warmed on each of them (seconds on a CI core).
            "batching": {"max_batch": 2, "widths": [320, 640]},
        },
    }
    config.write_text(json.dumps(cfg))
    proc = EdgedProcess(config)
    try:
        yield proc, health, rec
    finally:
        proc.kill()


def test_live_update_shadow_switch_refuse_force_rollback(
    daemon: tuple[EdgedProcess, int, Path], mosquitto: Mosquitto
) -> None:
    proc, health, rec = daemon
    topic = f"edged/test/{MODEL}/update"

    def model() -> dict[str, Any]:
        return stats(health).get("models", {}).get(MODEL, {})

    def count(result: str) -> float:
        return metric(health, "edged_model_updates_total", f'model="{MODEL}",result="{result}"') or 0.0

    def last_seq() -> int:
        events = proc.events()
        return events[-1]["seq"] if events else -1

    with Subscriber(mosquitto, topic) as sub:

        def replies() -> list[dict[str, Any]]:
            return [json.loads(m.payload) for m in sub.on(topic)]

        def wait_reply(result: str, n: int = 1) -> dict[str, Any]:
            ok = sub.wait_for(lambda _m: sum(r["result"] == result for r in replies()) >= n, 90)
            assert ok, f"no {result!r} reply: {replies()}\n{proc.text()[-3000:]}"
            return [r for r in replies() if r["result"] == result][n - 1]

        def send(action: str, payload: str = "") -> None:
            sub.client.publish(f"edged/test/{MODEL}/set/{action}", payload, qos=1).wait_for_publish(5)

        assert wait_until(lambda: up(health), 60), proc.text()
        # Every label set exists from the start; the recognizer's optimized build is adopted.
        assert count("switched") == 0 and count("rejected") == 0, proc.text()
        assert wait_until(lambda: model().get("build", {}).get("state") == "ready", 60), model()
        assert metric(health, "edged_engine_build_state", f'model="{MODEL}",state="ready"') == 1.0
        assert metric(health, "edged_engine_build_progress", f'model="{MODEL}"') == 1.0
        assert metric(health, "edged_model_update_state", f'model="{MODEL}",state="idle"') == 1.0
        assert wait_until(lambda: last_seq() >= FRAMES, 90), proc.text()
        original = model()["update"]["active"]
        assert original.startswith("rec.onnx@") and model()["update"]["state"] == "idle"

        # Nothing to roll back to yet: refused, one reply.
        send("rollback")
        assert "no previous model" in wait_reply("rejected")["reason"]

        # 1. An agreeing file (ONNX Runtime's optimized build of the same recognizer) + SIGHUP.
        replace_file(rec, Path(model()["build"]["path"]))
        proc.send_signal(signal.SIGHUP)
        switched = wait_reply("switched")
        assert [r["result"] for r in replies()][-2:] == ["shadow_started", "switched"]
        assert switched["trigger"] == "sighup" and switched["report"]["frames"] == SHADOW
        assert switched["report"]["agree"] and switched["file"] == str(rec)
        assert model()["update"]["last"]["result"] == "switched" and model()["update"]["previous"] == original
        agreeing = model()["update"]["active"]
        assert agreeing != original and count("switched") == 1 and count("shadow_started") == 1

        # 2. A disagreeing file (PP-OCRv4 recognizer, another character set) + SIGHUP: refused.
        replace_file(rec, v4_recognizer())
        proc.send_signal(signal.SIGHUP)
        refused = wait_reply("refused")
        assert not refused["report"]["agree"] and refused["report"]["label_mismatches"] > 0, refused
        assert "became" in refused["reason"]
        upd = model()["update"]
        assert upd["active"] == agreeing and upd["last"]["result"] == "refused" and upd["state"] == "idle"
        assert "became" in upd["last"]["reason"] and count("refused") == 1
        assert "WARNING edged.serving.slot.switch: model text_rec: refused rec.onnx@" in proc.text()
        if CHROMIUM is not None:  # the status page shows it too
            page = visible_text(
                chromium(f"http://127.0.0.1:{health}/", rec.parent.parent / "profile", "--dump-dom")
            )
            assert "idle; last: refused rec.onnx@" in page and "became" in page, page

        # 3. MQTT commands naming files that may not or cannot be loaded: one reply each, nothing changes.
        (rec.parent / "notes.onnx").write_text("not a model")
        for payload, reason in (
            ("/etc/hostname", "is outside the model folder(s) of models.text_rec"),
            ("missing.onnx", "no such file"),
            ("notes.onnx", "not an ONNX model"),
        ):
            send("update", payload)
            n = sum(r["result"] == "rejected" for r in replies()) + 1
            assert reason in wait_reply("rejected", n)["reason"]
        assert count("rejected") == 4 and model()["update"]["active"] == agreeing

        # 4. `force` switches the disagreeing model in (the file on disk is the PP-OCRv4 one now).
        before_force = last_seq()
        send("force", "rec.onnx")
        assert wait_reply("forced")["trigger"] == "mqtt"
        forced_at = last_seq()
        assert count("forced") == 1 and model()["update"]["previous"] == agreeing
        assert wait_until(lambda: last_seq() > forced_at + 2 * FRAMES, 90), proc.text()

        # 5. `rollback`: back to the agreeing model, and to the original reads.
        send("rollback")
        wait_reply("rolled_back")
        back_at = last_seq()
        assert model()["update"]["active"] == agreeing and count("rolled_back") == 1
        assert wait_until(lambda: last_seq() > back_at + FRAMES + 4, 90), proc.text()
        assert proc.stop() == 0, proc.text()

    events = proc.events()
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(set(seqs)), "events repeated or out of order"
    baseline = {e["seq"]: read_texts(e) for e in events if e["seq"] < FRAMES}
    assert baseline and any(" " in t for texts in baseline.values() for t in texts)
    # No frame lost: every frame that has text in the first loop has its event in every later loop.
    have = set(seqs)
    lost = [s for s in range(seqs[-1] + 1) if s % FRAMES in baseline and s not in have]
    assert not lost, f"frames without their event: {lost}"
    # Same reads through the agreeing switch and the refusal, other reads while forced, the same again
    # after the rollback.
    changed = [
        e["seq"]
        for e in events
        if e["seq"] <= before_force and read_texts(e) != baseline.get(e["seq"] % FRAMES)
    ]
    assert not changed, f"reads changed before the forced update: {changed}"
    forced = [e for e in events if forced_at + 4 < e["seq"] <= back_at]
    assert any(read_texts(e) != baseline.get(e["seq"] % FRAMES) for e in forced), (
        "the forced model read the same"
    )
    # Every batch was decoded by its own engine's decoder (each file has its own character set): a read
    # is either the original one or PP-OCRv4's (which drops the spaces), never garbage.
    for e in events:
        base = baseline.get(e["seq"] % FRAMES) or []
        assert read_texts(e) in (base, sorted(t.replace(" ", "") for t in base)), (
            e["seq"],
            read_texts(e),
            base,
        )
    after = [e for e in events if e["seq"] > back_at + 4]
    assert after and all(read_texts(e) == baseline.get(e["seq"] % FRAMES) for e in after)
    log = proc.text()
    for step in (
        "model text_rec: loading",
        "model text_rec: shadow started",
        "model text_rec: switched",
        "model text_rec: refused",
        "model text_rec: forced",
        "model text_rec: rolled back",
        "refused: /etc/hostname is outside",
    ):
        assert step in log, step
    assert "Traceback" not in log
