"""Logs of a real `edged run`: every JSON line parses, times are ISO 8601 UTC, and under systemd
(JOURNAL_STREAM set) every line carries the journald priority of its level."""

from __future__ import annotations

import json
import logging
import re
import signal
import sys
from datetime import datetime
from pathlib import Path

import pytest

from edged.cli.logsetup import JsonFormatter, journal_priority, make_formatter
from tests._edged import EdgedProcess, camera, small_sample, stats, wait_until, write_config
from tests.support.broker import free_port

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def _run_daemon(tmp_path: Path, *, json_format: bool, env: dict[str, str]) -> list[str]:
    """A daemon with one good camera and one whose file is missing (so warnings are logged)."""
    port = free_port()
    sample = small_sample(tmp_path)
    cfg_path = write_config(
        tmp_path,
        {"good": camera(sample, chain=False), "gone": camera(tmp_path / "missing.mp4", chain=False)},
        health_port=port,
    )
    cfg = json.loads(cfg_path.read_text())
    cfg["logging"] = {"level": "INFO", "json_format": json_format}  # any case is accepted
    cfg_path.write_text(json.dumps(cfg))
    proc = EdgedProcess(cfg_path, env=env)
    try:
        assert wait_until(
            lambda: stats(port).get("cameras", {}).get("good", {}).get("state") == "streaming", 60
        )
        assert wait_until(lambda: "reopening" in proc.text(), 20), proc.text()
        assert proc.stop(signal.SIGTERM) == 0
    finally:
        proc.kill()
    return proc.text().splitlines()


def test_json_log_lines_all_parse(tmp_path: Path) -> None:
    lines = _run_daemon(tmp_path, json_format=True, env={"JOURNAL_STREAM": ""})
    assert len(lines) >= 5
    records = [json.loads(line) for line in lines]  # raises on the first line that is not JSON
    for r in records:
        assert ISO_UTC.match(r["t"]), r
        assert r["level"] in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
        assert isinstance(r["msg"], str) and r["logger"].startswith("edged")
    msgs = [r["msg"] for r in records]
    # The multi-line startup summary and a warning with quotes survive as single JSON strings.
    summary = next(m for m in msgs if m.startswith("startup summary:"))
    assert "\n  camera good:" in summary
    warning = next(r for r in records if r["level"] == "WARNING" and "gone" in r["msg"])
    assert "missing.mp4" in warning["msg"]
    assert msgs[-1] == "stopped"


def test_under_journald_every_line_has_its_priority(tmp_path: Path) -> None:
    # systemd sets JOURNAL_STREAM to "<device>:<inode>" of the stream it reads.
    lines = _run_daemon(tmp_path, json_format=False, env={"JOURNAL_STREAM": "8:12345"})
    assert lines and all(re.match(r"^<[2-7]>", line) for line in lines), lines
    assert any(line.startswith("<4>WARNING edged.capture.worker: camera gone:") for line in lines), lines
    assert any(line.startswith("<6>INFO edged: stopped") for line in lines)
    # journald adds its own timestamps: the text lines carry none.
    assert not any(re.match(r"^<\d>\d{4}-", line) for line in lines)


def test_json_formatter_keeps_exceptions_and_odd_values_in_one_line() -> None:
    try:
        raise ValueError('it\'s "quoted"')
    except ValueError:
        record = logging.getLogger("edged.x").makeRecord(
            "edged.x", logging.ERROR, __file__, 1, "bad %s", ({"k": 'v"'},), exc_info=True
        )
        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line
    out = json.loads(line)
    assert out["msg"] == "bad {'k': 'v\"'}" and "ValueError" in out["exc"]
    assert datetime.fromisoformat(out["t"].replace("Z", "+00:00")).utcoffset().total_seconds() == 0
    # The journald wrapper prefixes every physical line of a multi-line text record.
    text = make_formatter(json_format=False, under_journal=True).format(record)
    assert all(line.startswith("<3>") for line in text.splitlines())


@pytest.mark.parametrize(("level", "prio"), [(50, 2), (40, 3), (30, 4), (20, 6), (10, 7), (25, 6), (5, 7)])
def test_journal_priority_of_each_level(level: int, prio: int) -> None:
    assert journal_priority(level) == prio
