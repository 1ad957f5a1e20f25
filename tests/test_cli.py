"""The `edged` command line as a user meets it: real subprocesses, real pipes, real files."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from edged.cli.main import build_parser
from tests.support.paths import ROOT, need_models


def edged(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edged", *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )


THREE_MISTAKES = """\
device: {name: gate-01}
models:
  text_det: {path: %s, kind: ppocr_det}
cameras:
  gate:
    source: file://x.mp4
    fsp: 10
    chain:
      - {model: text_dett, min_score: 0.5}
"""


def test_check_config_reports_schema_reference_and_file_problems_in_one_run(tmp_path: Path) -> None:
    cfg = tmp_path / "edged.yaml"
    cfg.write_text(THREE_MISTAKES % "models/none.onnx")
    r = edged("check-config", str(cfg))
    assert r.returncode == 78, r
    assert "3 problems" in r.stderr
    assert f"{cfg}:3:20: models.text_det.path: model file not found: {tmp_path}/models/none.onnx" in r.stderr
    assert f"{cfg}:7:5: cameras.gate.fsp: unknown key; did you mean `fps`?" in r.stderr
    assert (
        f"{cfg}:9:17: cameras.gate.chain[0].model: unknown model 'text_dett' (models: text_det)" in r.stderr
    )
    assert "Traceback" not in r.stderr


def test_check_config_with_a_good_model_and_a_typo_reports_only_the_typo(tmp_path: Path) -> None:
    cfg = tmp_path / "edged.yaml"
    cfg.write_text(
        (THREE_MISTAKES % (need_models() / "PP-OCRv6_det_small.onnx")).replace("text_dett", "text_det")
    )
    r = edged("check-config", "--config", str(cfg))  # --config works as well as the positional FILE
    assert r.returncode == 78
    assert "1 problem:" in r.stderr and "did you mean `fps`?" in r.stderr


def test_check_config_yaml_syntax_error_is_one_located_line(tmp_path: Path) -> None:
    cfg = tmp_path / "edged.yaml"
    cfg.write_text("cameras:\n  gate: {source: [\n")
    r = edged("check-config", "-c", str(cfg))
    assert r.returncode == 78 and f"{cfg}:3:1: (top level): invalid YAML" in r.stderr
    assert "Traceback" not in r.stderr


def test_every_command_takes_config_and_has_help_for_every_option() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == {
        "run",
        "check-config",
        "schema",
        "install-models",
        "make-fp16",
        "make-sample",
        "build-engine",
        "doctor",
        "predict",
    }
    for name, p in sub.choices.items():
        assert p.description and len(p.description) > 40, name
        options = {o for a in p._actions for o in a.option_strings}
        assert "--config" in options, name
        for a in p._actions:
            assert a.help, f"{name} {a.option_strings or a.dest} has no help"
    # Defaults are shown, None defaults are not.
    r = edged("make-sample", "--help")
    assert r.returncode == 0
    assert "samples/plates.mp4" in r.stdout and "(default: 150)" in r.stdout
    assert "default: None" not in r.stdout
    r = edged("run", "--help")
    assert "(default: /etc/edged/edged.yaml)" in r.stdout and "Exit 78 on a bad config" in r.stdout


@pytest.mark.parametrize("level", ["DEBUG", "Warning", "error"])
def test_log_level_any_case(tmp_path: Path, level: str) -> None:
    # The level is accepted (not argparse's exit 2); the missing file then exits 78.
    r = edged("run", "--log-level", level, "--config", str(tmp_path / "none.yaml"))
    assert r.returncode == 78, r.stderr
    assert "cannot read config" in r.stderr


def test_unknown_log_level_is_one_clear_line(tmp_path: Path) -> None:
    r = edged("run", "--log-level", "loud", "--config", str(tmp_path / "none.yaml"))
    assert r.returncode == 2
    assert "invalid level 'loud' (choose from debug, info, warning, error)" in r.stderr
    assert "Traceback" not in r.stderr


def test_schema_into_a_closed_pipe_is_one_line_and_ex_ioerr() -> None:
    # `edged schema | head -1`: the reader is gone before edged writes (closed at once, so no race).
    p = subprocess.Popen(
        [sys.executable, "-m", "edged", "schema"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    assert p.stdout is not None and p.stderr is not None
    p.stdout.close()
    err = p.stderr.read()
    assert p.wait(60) == 74  # EX_IOERR (sysexits)
    assert err == "edged: schema: cannot write to standard output: Broken pipe\n", err


def test_check_config_into_a_full_disk_is_one_line_and_ex_ioerr(tmp_path: Path) -> None:
    cfg = tmp_path / "edged.yaml"
    cfg.write_text(f"state_dir: {tmp_path}/state\nmqtt: {{enabled: false}}\nallow_no_cameras: true\n")
    with open("/dev/full", "w") as full:  # every write to it fails with ENOSPC
        r = subprocess.run(
            [sys.executable, "-m", "edged", "check-config", str(cfg)],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            timeout=120,
        )
    assert r.returncode == 74, r.stderr
    assert r.stderr == "edged: check-config: cannot write to standard output: No space left on device\n"


@pytest.mark.parametrize("command", ["run", "check-config", "make-sample"])
def test_a_wrong_flag_prints_the_subcommand_usage(command: str) -> None:
    r = edged(command, "--bogus")
    assert r.returncode == 2
    assert r.stderr.startswith(f"usage: edged {command} "), r.stderr
    assert r.stderr.rstrip().endswith(f"edged {command}: error: unrecognized arguments: --bogus")


def test_check_config_dash_reads_standard_input(tmp_path: Path) -> None:
    def check(text: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "edged", "check-config", "-"],
            input=text,
            capture_output=True,
            text=True,
            cwd=tmp_path,  # relative paths in a piped config are relative to the current folder
            timeout=120,
        )

    r = check(THREE_MISTAKES % "models/none.onnx")
    assert r.returncode == 78, r.stderr
    assert "edged: config <stdin>: 3 problems" in r.stderr
    assert "<stdin>:7:5: cameras.gate.fsp: unknown key; did you mean `fps`?" in r.stderr
    assert (
        f"<stdin>:3:20: models.text_det.path: model file not found: {tmp_path}/models/none.onnx" in r.stderr
    )
    good = THREE_MISTAKES.replace("fsp", "fps").replace("text_dett", "text_det")
    r = check(good % (need_models() / "PP-OCRv6_det_small.onnx"))
    assert r.returncode == 0, r.stderr
    assert r.stdout == "<stdin>: OK (1 model(s), camera(s): gate)\n"


def test_doctor_json(tmp_path: Path) -> None:
    cfg = tmp_path / "edged.yaml"
    cfg.write_text(f"state_dir: {tmp_path}/state\nmqtt: {{enabled: false}}\n")
    r = edged("doctor", "--json", "--config", str(cfg))
    out = json.loads(r.stdout)
    assert out["ok"] is (r.returncode == 0)
    names = {c["name"] for c in out["checks"]}
    assert {"Python", "ONNX Runtime", "config"} <= names
    for c in out["checks"]:
        assert set(c) == {"name", "status", "detail", "fix"}
        assert c["status"] in {"ok", "warn", "FAIL", "info"}
    assert out["failed"] == [c["name"] for c in out["checks"] if c["status"] == "FAIL"]
