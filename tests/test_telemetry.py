"""edged.observability.telemetry against fake Jetson sysfs trees (real directories laid out like JetPack 6 and 4),
the non-Jetson path on this machine, prometheus gauges, and the stats topic on a real broker."""

from __future__ import annotations

import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from edged.observability.metrics import Metrics
from edged.observability.telemetry import Telemetry, parse_nvpmodel_q
from edged.observability.telemetry_gauges import register_gauges
from edged.publish.mqtt.publisher import MqttPublisher
from edged.publish.stats import StatsPublisher
from tests.support.broker import Mosquitto
from tests.support.clients import Subscriber, running_publisher


def put(root: Path, rel: str, text: str) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text + "\n")


def orin_tree(root: Path) -> Path:
    """What a Jetson Orin Nano on JetPack 6 (L4T R36.3) exposes, values in the kernel's units."""
    put(
        root,
        "etc/nv_tegra_release",
        "# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64",
    )
    put(root, "proc/device-tree/model", "NVIDIA Jetson Orin Nano Developer Kit\x00")
    zones = [
        ("cpu-thermal", "45500"),
        ("gpu-thermal", "44031"),
        ("soc0-thermal", "-256000"),
        ("tj-thermal", "46250"),
    ]
    for i, (kind, milli) in enumerate(zones):
        put(root, f"sys/devices/virtual/thermal/thermal_zone{i}/type", kind)
        put(root, f"sys/devices/virtual/thermal/thermal_zone{i}/temp", milli)
    # The i2c driver folder holds a symlink to the device, as in the kernel.
    dev = root / "sys/devices/platform/bus@0/c240000.i2c/i2c-1/1-0040"
    hw = dev / "hwmon/hwmon3"
    for ch, label, mv, ma in [
        (1, "VDD_IN", 5080, 1210),
        (2, "VDD_CPU_GPU_CV", 5072, 300),
        (3, "VDD_SOC", 5072, 420),
    ]:
        put(hw, f"in{ch}_label", label)
        put(hw, f"in{ch}_input", str(mv))
        put(hw, f"curr{ch}_input", str(ma))
    put(hw, "in4_label", "sum of shunt voltages")
    put(hw, "in4_input", "40")
    put(hw, "curr4_input", "9999")
    drivers = root / "sys/bus/i2c/drivers/ina3221"
    drivers.mkdir(parents=True)
    (drivers / "1-0040").symlink_to(dev)
    put(root, "sys/devices/platform/gpu.0/load", "523")
    put(root, "sys/class/devfreq/15340000.vic/cur_freq", "115200000")
    put(root, "sys/class/devfreq/17000000.ga10b/cur_freq", "624750000")
    put(root, "sys/class/devfreq/17000000.ga10b/min_freq", "306000000")
    put(root, "sys/class/devfreq/17000000.ga10b/max_freq", "624750000")
    for cpu, khz in [(0, 1510400), (1, 729600), (10, 1510400)]:
        put(root, f"sys/devices/system/cpu/cpu{cpu}/cpufreq/scaling_cur_freq", str(khz))
    put(root, "sys/devices/system/cpu/cpufreq/policy0/scaling_cur_freq", "1")  # not a core
    put(root, "proc/loadavg", "1.25 0.80 0.50 2/345 6789")
    put(root, "proc/meminfo", "MemTotal:        7799212 kB\nMemFree:  100 kB\nMemAvailable:    5702060 kB")
    for i, (kind, cur, top) in enumerate([("pwm-fan", 3, 10), ("cpu-throttle-alert", 1, 4)]):
        put(root, f"sys/devices/virtual/thermal/cooling_device{i}/type", kind)
        put(root, f"sys/devices/virtual/thermal/cooling_device{i}/cur_state", str(cur))
        put(root, f"sys/devices/virtual/thermal/cooling_device{i}/max_state", str(top))
    put(root, "sys/class/hwmon/hwmon1/oc1_event_cnt", "0")
    put(root, "sys/class/hwmon/hwmon1/oc2_event_cnt", "3")
    put(root, "var/lib/nvpmodel/status", "pmode:0001 fmode:quiet")
    put(
        root,
        "etc/nvpmodel.conf",
        "< POWER_MODEL ID=0 NAME=15W >\nCPU_ONLINE CORE_0 1\n< POWER_MODEL ID=1 NAME=7W >\n",
    )
    return root


def test_orin_sysfs_tree_is_read_in_proper_units(tmp_path: Path) -> None:
    snap = Telemetry(orin_tree(tmp_path), use_jtop=False, nvpmodel_cmd=None).snapshot()
    assert snap["jetson"] == {
        "available": True,
        "reason": None,
        "l4t": "36.3.0",
        "model": "NVIDIA Jetson Orin Nano Developer Kit",
    }
    assert snap["source"] == "sysfs"
    # -256 °C is a powered-down zone, not a reading
    assert snap["temperatures_c"] == {"cpu-thermal": 45.5, "gpu-thermal": 44.0, "tj-thermal": 46.2}
    assert snap["power_mw"] == {
        "VDD_IN": {"voltage_mv": 5080.0, "current_ma": 1210.0, "power_mw": 6146.8},
        "VDD_CPU_GPU_CV": {"voltage_mv": 5072.0, "current_ma": 300.0, "power_mw": 1521.6},
        "VDD_SOC": {"voltage_mv": 5072.0, "current_ma": 420.0, "power_mw": 2130.2},
    }
    assert snap["gpu"] == {"load_pct": 52.3, "freq_mhz": 624.8, "min_mhz": 306.0, "max_mhz": 624.8}
    assert snap["cpu"] == {
        "load": [1.25, 0.8, 0.5],
        "freq_mhz": {"cpu0": 1510.4, "cpu1": 729.6, "cpu10": 1510.4},
    }
    assert list(snap["cpu"]["freq_mhz"]) == ["cpu0", "cpu1", "cpu10"], "numeric, not string, order"
    assert snap["memory"] == {"total_mb": 7616.4, "used_mb": 2048.0}
    assert snap["throttling"] == {
        "active": True,
        "cooling": {"cpu-throttle-alert": "1/4"},  # the fan spinning is not throttling
        "oc_events": {"oc1": 0, "oc2": 3},
    }
    assert snap["nvpmodel"] == {"id": 1, "mode": "7W"}
    assert "unavailable" not in snap
    json.dumps(snap)  # goes to /stats and MQTT as is


def test_jetpack4_iio_power_rails(tmp_path: Path) -> None:
    put(tmp_path, "etc/nv_tegra_release", "# R32 (release), REVISION: 7.4, GCID: 33514132, BOARD: t210ref")
    iio = "sys/bus/i2c/drivers/ina3221x/6-0040/iio:device0"
    for ch, name, mw, mv, ma in [(0, "POM_5V_IN", 2345, 5000, 469), (1, "POM_5V_GPU", 40, 5000, 8)]:
        put(tmp_path, f"{iio}/rail_name_{ch}", name)
        put(tmp_path, f"{iio}/in_power{ch}_input", str(mw))
        put(tmp_path, f"{iio}/in_voltage{ch}_input", str(mv))
        put(tmp_path, f"{iio}/in_current{ch}_input", str(ma))
    put(tmp_path, "sys/devices/gpu.0/load", "0")
    snap = Telemetry(tmp_path, use_jtop=False, nvpmodel_cmd=None).snapshot()
    assert snap["jetson"]["l4t"] == "32.7.4"
    assert snap["power_mw"] == {
        "POM_5V_IN": {"power_mw": 2345.0, "voltage_mv": 5000.0, "current_ma": 469.0},
        "POM_5V_GPU": {"power_mw": 40.0, "voltage_mv": 5000.0, "current_ma": 8.0},
    }
    assert snap["gpu"] == {"load_pct": 0.0}
    # Nothing tells the power mode and no zone is readable: the snapshot says so rather than omitting it.
    assert snap["unavailable"] == {
        "temperatures_c": "not exposed by this kernel/JetPack",
        "nvpmodel": "not exposed by this kernel/JetPack",
    }


def test_nvpmodel_query_runs_the_real_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_nvpmodel_q("NVPM WARN: x\nNV Power Mode: MAXN_SUPER\n2\n") == {"mode": "MAXN_SUPER", "id": 2}
    assert parse_nvpmodel_q("nvpmodel: not permitted") is None
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "nvpmodel"
    script.write_text('#!/bin/sh\n[ "$1" = -q ] || exit 2\necho "NV Power Mode: 25W"\necho 3\n')
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    snap = Telemetry(orin_tree(tmp_path / "root"), use_jtop=False).snapshot()
    assert snap["nvpmodel"] == {"mode": "25W", "id": 3}, "the command wins over the status file"


def test_this_machine_is_reported_as_not_a_jetson() -> None:
    if Path("/etc/nv_tegra_release").exists():
        pytest.skip("this machine is a Jetson")
    snap = Telemetry("/").snapshot()  # jtop allowed: it is not consulted off a Jetson
    assert snap["jetson"] == {"available": False, "reason": "not a Jetson (no /etc/nv_tegra_release)"}
    assert snap["source"] == "sysfs" and snap["nvpmodel"] is None
    assert snap["unavailable"]["nvpmodel"] == "not a Jetson (no /etc/nv_tegra_release)"
    assert snap["unavailable"]["gpu"] == "not a Jetson (no /etc/nv_tegra_release)"
    assert len(snap["cpu"]["load"]) == 3  # generic values still come through
    assert snap["memory"]["total_mb"] > 0
    json.dumps(snap)


def test_snapshot_is_cached_briefly(tmp_path: Path) -> None:
    root = orin_tree(tmp_path)
    t = Telemetry(root, use_jtop=False, nvpmodel_cmd=None, max_age_s=60)
    first = t.snapshot()
    put(root, "sys/devices/platform/gpu.0/load", "1000")
    assert t.snapshot() is first
    fresh = Telemetry(root, use_jtop=False, nvpmodel_cmd=None, max_age_s=0).snapshot()
    assert fresh["gpu"]["load_pct"] == 100.0


def test_prometheus_gauges_on_the_shared_registry(tmp_path: Path) -> None:
    metrics = Metrics()
    register_gauges(Telemetry(orin_tree(tmp_path), use_jtop=False, nvpmodel_cmd=None), metrics.registry)
    text = generate_latest(metrics.registry).decode()
    for line in [
        "edged_device_jetson 1.0",
        'edged_device_temperature_celsius{zone="cpu-thermal"} 45.5',
        'edged_device_power_watts{rail="VDD_IN"} 6.1468',
        "edged_gpu_load_ratio 0.523",
        "edged_gpu_frequency_hertz 6.248e+08",
        'edged_cpu_frequency_hertz{cpu="cpu1"} 7.296e+08',
        "edged_device_throttled 1.0",
        'edged_nvpmodel_info{mode="7W"} 1.0',
        "# TYPE edged_frames_total counter",  # the pipeline's own metrics are still there
    ]:
        assert line in text, f"{line!r} not in:\n{text}"


def test_prometheus_gauges_off_a_jetson(tmp_path: Path) -> None:
    put(tmp_path, "proc/loadavg", "0.1 0.1 0.1 1/1 1")
    metrics = Metrics()
    register_gauges(Telemetry(tmp_path, use_jtop=False), metrics.registry)
    text = generate_latest(metrics.registry).decode()
    assert "edged_device_jetson 0.0" in text and "edged_device_throttled 0.0" in text
    assert "edged_gpu_load_ratio" not in text and "edged_nvpmodel_info" not in text


@pytest.fixture
def publisher(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[MqttPublisher]:
    with running_publisher(mosquitto, tmp_path / "outbox", device="tele", prefix="edged/tele") as pub:
        yield pub


def test_stats_topic_on_a_real_broker(tmp_path: Path, mosquitto: Mosquitto, publisher: MqttPublisher) -> None:
    status = {"device": "tele", "cameras": {"gate": {"fps": 9.5}}}
    stats = StatsPublisher(
        publisher,
        "edged/tele/stats",
        0.3,
        lambda: status,
        Telemetry(orin_tree(tmp_path / "root"), use_jtop=False, nvpmodel_cmd=None),
    )
    with Subscriber(mosquitto, "edged/tele/stats") as sub:
        stats.start()
        try:
            assert sub.wait_for(lambda ms: len(ms) >= 3, 20), "stats messages did not arrive"
        finally:
            stats.stop()
        n = len(sub.messages)
        time.sleep(0.8)
        assert len(sub.messages) == n, "stats went on after stop()"
    msg = sub.messages[0]
    assert not msg.retain and msg.qos == 0
    body = json.loads(msg.payload)
    assert body["status"] == status and body["telemetry"]["gpu"]["load_pct"] == 52.3
    assert abs(body["ts"] - time.time()) < 60

    mosquitto.stop()
    deadline = time.monotonic() + 10
    while publisher.connected and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stats.publish_once() is False, "stats are dropped, not queued, while the broker is away"


def test_stats_interval_zero_disables_the_topic(tmp_path: Path) -> None:
    class Never:
        def publish_raw(self, topic: str, payload: bytes | str, retain: bool = False, qos: int = 0) -> None:
            raise AssertionError("must not publish")

    s = StatsPublisher(Never(), "t", 0, dict, Telemetry(tmp_path, use_jtop=False))
    s.start()
    assert s._thread is None
    s.stop()
