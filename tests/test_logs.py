"""Logs of a real `edged run`: every JSON line parses, with the field names log pipelines map without
rules (`timestamp`, `level`, `logger`, `message`, structured fields), read by a real `jq` with the
command docs/operations.md documents; under systemd (JOURNAL_STREAM set) every line carries the
journald priority of its level, and the unit names its entries (SyslogIdentifier)."""

from __future__ import annotations

import json
import logging
import re
import shutil
import signal
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from edged.cli.logsetup import JsonFormatter, journal_priority, make_formatter
from tests.support.broker import free_port
from tests.support.edged import EdgedProcess, camera, small_sample, stats, wait_until, write_config
from tests.support.paths import ROOT

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def _run_daemon(tmp_path: Path, *, json_format: bool, env: dict[str, str]) -> list[str]:
    """A daemon with one good camera, one whose file is missing (so warnings are logged) and one
    disabled (logged with a structured `camera` field)."""
    port = free_port()
    sample = small_sample(tmp_path)
    cfg_path = write_config(
        tmp_path,
        {
            "good": camera(sample, chain=False),
            "gone": camera(tmp_path / "missing.mp4", chain=False),
            "off": camera(sample, chain=False, enabled=False),
        },
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


@pytest.fixture(scope="module")
def json_lines(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """The log of one real daemon run with `logging.json_format: true`."""
    return _run_daemon(tmp_path_factory.mktemp("json-logs"), json_format=True, env={"JOURNAL_STREAM": ""})


def test_json_log_lines_all_parse(json_lines: list[str]) -> None:
    lines = json_lines
    assert len(lines) >= 5
    records = [json.loads(line) for line in lines]  # raises on the first line that is not JSON
    for r in records:
        assert list(r)[:5] == ["timestamp", "level", "logger", "message", "thread"], r
        assert ISO_UTC.match(r["timestamp"]), r
        assert r["level"] in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
        assert isinstance(r["message"], str) and r["logger"].startswith("edged")
    msgs = [r["message"] for r in records]
    # The multi-line startup summary and a warning with quotes survive as single JSON strings.
    summary = next(m for m in msgs if m.startswith("startup summary:"))
    assert "\n  camera good:" in summary
    warning = next(r for r in records if r["level"] == "WARNING" and "gone" in r["message"])
    assert "missing.mp4" in warning["message"]
    # A structured field of the call is a field of its own.
    off = next(r for r in records if r["message"] == "camera off: disabled in the config")
    assert off["camera"] == "off" and off["logger"] == "edged"
    assert msgs[-1] == "stopped"


def _documented_jq_filter() -> str:
    text = (ROOT / "docs/operations.md").read_text()
    m = re.search(r"journalctl -u edged -o cat \| jq -r '([^']+)'", text)
    assert m, "docs/operations.md no longer shows the jq command"
    return m.group(1)


@pytest.mark.skipif(shutil.which("jq") is None, reason="jq not installed (scripts/setup-env.sh installs it)")
def test_jq_reads_the_json_lines_with_the_documented_command(json_lines: list[str]) -> None:
    lines = json_lines
    stdin = "\n".join(lines) + "\n"
    out = subprocess.run(
        ["jq", "-r", _documented_jq_filter()], input=stdin, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    # Only warnings and errors, each as "<timestamp> <level> <logger>: <message>", found without renaming.
    assert out, lines
    assert all(re.match(r"^\d{4}-\d\d-\d\dT\S+Z (WARNING|ERROR) edged[\w.]*: ", line) for line in out), out
    assert any(" WARNING edged.capture.worker: camera gone:" in line for line in out), out
    # Every field a pipeline maps is there by its plain name on every line (jq: null when missing).
    fields = subprocess.run(
        ["jq", "-c", "[.timestamp, .level, .logger, .message] | map(type)"],
        input=stdin,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    assert fields and set(fields) == {'["string","string","string","string"]'}, fields


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
    record.odd = object()  # an `extra=` value JSON cannot encode: written as its repr, never lost
    line = JsonFormatter().format(record)
    assert "\n" not in line
    out = json.loads(line)
    assert out["message"] == "bad {'k': 'v\"'}" and "ValueError" in out["exception"]
    assert out["odd"].startswith("<object object at")
    assert datetime.fromisoformat(out["timestamp"].replace("Z", "+00:00")).utcoffset().total_seconds() == 0
    # The journald wrapper prefixes every physical line of a multi-line text record.
    text = make_formatter(json_format=False, under_journal=True).format(record)
    assert all(line.startswith("<3>") for line in text.splitlines())


@pytest.mark.parametrize(("level", "prio"), [(50, 2), (40, 3), (30, 4), (20, 6), (10, 7), (25, 6), (5, 7)])
def test_journal_priority_of_each_level(level: int, prio: int) -> None:
    assert journal_priority(level) == prio
