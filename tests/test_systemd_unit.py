"""systemd/edged.service: systemd itself verifies it, its exposure score stays low, key directives stay put."""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from edged import EX_CONFIG

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "edged.service"
MAX_EXPOSURE = 2.5
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze not installed (apt-get install systemd; .ci/run installs it)"
)


def directives() -> dict[str, dict[str, list[str]]]:
    """section -> key -> every value, in order (systemd allows repeated keys, configparser does not)."""
    out: dict[str, dict[str, list[str]]] = {}
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            out.setdefault(section, {})
            continue
        key, _, value = line.partition("=")
        out[section].setdefault(key.strip(), []).append(value.strip())
    return out


def service() -> dict[str, list[str]]:
    return directives()["Service"]


def _one(key: str) -> str:
    values = service().get(key)
    assert values, f"{key}= missing from [Service]"
    return values[-1]


def test_unit_parses_as_ini_sections() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.read_string(UNIT.read_text())
    assert {"Unit", "Service", "Install"} <= set(parser.sections())
    assert parser["Install"]["WantedBy"] == "multi-user.target"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("Type", "notify"),
        ("NotifyAccess", "main"),
        ("ExecStart", "/opt/edged/venv/bin/edged run --config /etc/edged/edged.yaml"),
        ("ExecReload", "/bin/kill -HUP $MAINPID"),
        ("WatchdogSec", "30"),
        ("WatchdogSignal", "SIGTERM"),
        ("Restart", "on-failure"),
        ("RestartSec", "5"),
        ("RestartPreventExitStatus", str(EX_CONFIG)),
        ("RestartForceExitStatus", "SIGHUP"),
        ("TimeoutStopSec", "20"),
        ("User", "edged"),
        ("Group", "edged"),
        ("SupplementaryGroups", "video render"),
        ("StateDirectory", "edged"),
        ("CacheDirectory", "edged"),
        ("ConfigurationDirectory", "edged"),
        ("LoadCredential", "mqtt_password:/etc/edged/credentials/mqtt_password"),
        ("DevicePolicy", "closed"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("CapabilityBoundingSet", ""),
        ("AmbientCapabilities", ""),
        ("UMask", "0027"),
        ("ProtectProc", "invisible"),
        ("SystemCallArchitectures", "native"),
        ("SyslogIdentifier", "edged"),  # journald: SYSLOG_IDENTIFIER=edged on every entry
    ],
)
def test_key_directive(key: str, value: str) -> None:
    assert _one(key) == value


def test_devices_are_allowed_explicitly() -> None:
    allowed = service()["DeviceAllow"]
    for needed in ("char-video4linux rw", "/dev/nvmap rw", "char-nvhost* rw", "char-nvidia* rw"):
        assert needed in allowed


def test_network_and_syscalls_are_restricted_but_broker_reachable() -> None:
    families = _one("RestrictAddressFamilies").split()
    assert set(families) >= {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert "AF_PACKET" not in families
    assert "@system-service" in service()["SystemCallFilter"]
    assert "IPAddressDeny" not in service()  # the broker may be remote


def test_no_write_execute_ban() -> None:
    # CUDA's PTX JIT, TensorRT and ONNX Runtime need writable+executable pages.
    assert "MemoryDenyWriteExecute" not in service()


def test_header_states_the_measured_score() -> None:
    head = UNIT.read_text().split("[Unit]")[0]
    m = re.search(r"scores this unit (\d+\.\d)", head)
    assert m, "the comment at the top must state the measured exposure score"
    assert float(m.group(1)) <= MAX_EXPOSURE


def _security_score(unit: Path) -> float:
    assert ANALYZE is not None
    proc = subprocess.run(
        [ANALYZE, "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", proc.stdout + proc.stderr)
    assert m, f"no exposure score in systemd-analyze output:\n{proc.stdout}\n{proc.stderr}"
    return float(m.group(1))


@needs_analyze
def test_exposure_score(tmp_path: Path) -> None:
    score = _security_score(UNIT)
    assert score <= MAX_EXPOSURE, f"exposure {score} > {MAX_EXPOSURE}"
    head = UNIT.read_text().split("[Unit]")[0]
    stated = re.search(r"scores this unit (\d+\.\d)", head)
    assert stated and float(stated.group(1)) == score, "update the score stated at the top of the unit"


@needs_analyze
def test_exposure_check_can_fail(tmp_path: Path) -> None:
    # The same parser on an unhardened unit gives a high score, so the assertion above means something.
    bare = tmp_path / "bare.service"
    bare.write_text("[Service]\nExecStart=/bin/true\n")
    assert _security_score(bare) > MAX_EXPOSURE


def _verify(unit_text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    # verify insists that ExecStart exists; the venv is not installed here, so a copy runs /bin/true.
    copy = tmp_path / "edged.service"
    copy.write_text(re.sub(r"(?m)^ExecStart=.*$", "ExecStart=/bin/true", unit_text))
    return subprocess.run(
        [ANALYZE, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=120, check=False
    )


@needs_analyze
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    proc = _verify(UNIT.read_text(), tmp_path)
    # verify exits 0 even for unknown keys and unparsable values; it only warns, so warnings count as failure.
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr


@needs_analyze
def test_verify_catches_a_typo(tmp_path: Path) -> None:
    broken = UNIT.read_text().replace("WatchdogSec=30", "WatchdogSecs=30")
    proc = _verify(broken, tmp_path)
    assert "WatchdogSecs" in proc.stderr
