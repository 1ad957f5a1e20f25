"""Config loading: exact error locations, all problems at once, substitutions, model file checks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from edged.config.inference import effective_preprocess
from edged.config.loader import load_config
from edged.config.problems import ConfigError
from tests.support.paths import MODELS_DIR, need_models


def write(tmp_path: Path, text: str, name: str = "edged.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def problems(path: Path, **kw: object) -> list[str]:
    with pytest.raises(ConfigError) as e:
        load_config(path, **kw)  # type: ignore[arg-type]
    return [str(p) for p in e.value.problems]


def test_minimal_config_gets_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "device: {name: gate-01}\n"))
    assert cfg.mqtt.port == 1883 and cfg.mqtt.qos == 1
    assert cfg.health.bind == "127.0.0.1"
    assert cfg.topic_prefix == "edged/gate-01"


def test_empty_file_is_a_valid_default_config(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")).device.name == "edged"


def test_every_problem_reported_with_line_column_and_path(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "device:\n"
        "  name: gate-01\n"
        "mqtt:\n"
        "  host: 127.0.0.1\n"
        "  port: 99999\n"
        "  pasword: secret\n"
        "cameras:\n"
        "  gate:\n"
        "    source: file://x.mp4\n"
        "    fps: 0\n",
    )
    got = problems(p)
    assert f"{p}:5:9: mqtt.port: Input should be less than or equal to 65535" in got
    assert f"{p}:6:3: mqtt.pasword: unknown key; did you mean `password`?" in got
    assert any(s.startswith(f"{p}:10:10: cameras.gate.fps:") for s in got)
    assert len(got) == 3


def test_chain_references_are_checked(tmp_path: Path) -> None:
    need_models()
    p = write(
        tmp_path,
        f"models:\n"
        f"  det: {{path: {MODELS_DIR}/PP-OCRv6_det_small.onnx, kind: ppocr_det}}\n"
        f"cameras:\n"
        f"  gate:\n"
        f"    source: file://x.mp4\n"
        f"    chain:\n"
        f"      - {{model: det}}\n"
        f"      - {{model: rec, on: det}}\n"
        f"      - {{model: det, name: again, on: nothing}}\n",
    )
    got = problems(p)
    assert any(":8:17: cameras.gate.chain[1].model: unknown model 'rec'" in s for s in got), got
    assert any("cameras.gate.chain[2].on: 'nothing' is not an earlier stage" in s for s in got), got


def test_yaml_on_key_is_not_a_boolean(tmp_path: Path) -> None:
    # YAML 1.1 would read `on:` as True; the chain syntax depends on it being a string key.
    p = write(
        tmp_path,
        "models:\n  a: {path: a.onnx, kind: ppocr_det}\n  b: {path: b.onnx, kind: ppocr_rec}\n"
        "cameras:\n  c:\n    source: file://x.mp4\n    chain:\n      - {model: a}\n      - {model: b, on: a}\n",
    )
    cfg = load_config(p, check_files=False)
    assert cfg.cameras["c"].chain[1].on == "a"


def test_invalid_yaml_points_at_the_syntax_error(tmp_path: Path) -> None:
    p = write(tmp_path, "mqtt:\n  host: [unclosed\n")
    (msg,) = problems(p)
    assert msg.startswith(f"{p}:3:") and "invalid YAML" in msg


def test_duplicate_keys_are_errors(tmp_path: Path) -> None:
    p = write(tmp_path, "mqtt:\n  port: 1\n  port: 2\n")
    assert problems(p) == [f"{p}:3:3: mqtt.port: key is given twice"]


def test_env_and_credentials_substitution(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "mqtt_password").write_text("s3cret\n")
    p = write(
        tmp_path, "mqtt:\n  host: ${BROKER}\n  port: ${PORT:-1884}\n  password: ${cred:mqtt_password}\n"
    )
    cfg = load_config(p, env={"BROKER": "10.0.0.5", "CREDENTIALS_DIRECTORY": str(creds)})
    assert cfg.mqtt.host == "10.0.0.5" and cfg.mqtt.port == 1884
    assert cfg.mqtt.password is not None and cfg.mqtt.password.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(cfg)


def test_missing_variable_and_credential_are_located(tmp_path: Path) -> None:
    p = write(tmp_path, "mqtt:\n  host: ${NOPE}\n  password: ${cred:pw}\n")
    got = problems(p, env={})
    assert f"{p}:2:9: mqtt.host: ${{NOPE}}: environment variable NOPE is not set" in got
    assert any(s.startswith(f"{p}:3:13: mqtt.password:") and "CREDENTIALS_DIRECTORY" in s for s in got)


def test_model_file_checks(tmp_path: Path) -> None:
    (tmp_path / "junk.onnx").write_bytes(b"not a model at all")
    (tmp_path / "trunc.onnx").write_bytes(b"\x08\x07\x12\x00garbage")
    p = write(
        tmp_path,
        "models:\n"
        "  a: {path: missing.onnx, kind: yolo}\n"
        "  b: {path: junk.onnx, kind: yolo}\n"
        "  c: {path: trunc.onnx, kind: classifier, labels: nolabels.txt}\n",
    )
    got = problems(p)
    assert any(s.startswith(f"{p}:2:") and "models.a.path: model file not found" in s for s in got), got
    assert any("models.b.path" in s and "not an ONNX model" in s for s in got), got
    assert any("models.c.path" in s and "not a loadable ONNX model" in s for s in got), got
    assert any("models.c.labels: labels file not found" in s for s in got), got


def test_conv_algo_search_reaches_the_engine_options(tmp_path: Path) -> None:
    from edged.serving.loading import engine_options

    need_models()
    det = MODELS_DIR / "PP-OCRv6_det_small.onnx"
    p = write(
        tmp_path,
        f"models:\n  d: {{path: {det}, kind: ppocr_det, onnxruntime: {{conv_algo_search: exhaustive}}}}\n"
        f"  e: {{path: {det}, kind: ppocr_det}}\n",
    )
    cfg = load_config(p)
    assert engine_options(cfg.models["d"]).conv_algo_search == "exhaustive"
    assert engine_options(cfg.models["e"]).conv_algo_search == "heuristic"
    bad = write(
        tmp_path, f"models:\n  d: {{path: {det}, kind: ppocr_det, onnxruntime: {{conv_algo_search: fast}}}}\n"
    )
    got = problems(bad)
    assert len(got) == 1 and "models.d.onnxruntime.conv_algo_search" in got[0] and f"{bad}:2:" in got[0], got


def test_decoder_params_are_validated_with_location(tmp_path: Path) -> None:
    p = write(
        tmp_path, "models:\n  d:\n    path: m.onnx\n    kind: yolo\n    decode: {conf_thresh: 2, bogus: 1}\n"
    )
    got = problems(p, check_files=False)
    assert any("models.d.decode.conf_thresh" in s for s in got), got
    assert any("models.d.decode.bogus: unknown key" in s for s in got), got


def test_relative_paths_resolve_against_config_dir(tmp_path: Path) -> None:
    p = write(tmp_path, "models:\n  d: {path: m/x.onnx, kind: yolo}\ncameras:\n  c: {source: file://v.mp4}\n")
    cfg = load_config(p, check_files=False)
    assert cfg.models["d"].path == tmp_path.resolve() / "m/x.onnx"
    assert cfg.cameras["c"].source == f"file://{tmp_path.resolve()}/v.mp4"


def test_kind_defaults_and_overrides() -> None:
    from edged.config.inference import ModelConfig

    m = ModelConfig.model_validate({"path": "x.onnx", "kind": "yolo", "preprocess": {"size": [320, 320]}})
    spec = effective_preprocess(m)
    assert spec.resize == "letterbox" and spec.size == (320, 320) and spec.pad_value == 114


def test_shipped_configs_are_valid() -> None:
    root = Path(__file__).resolve().parent.parent
    for path in [root / "configs/edged.yaml", *sorted((root / "configs/examples").glob("*.yaml"))]:
        load_config(path, check_files=False, env={"CREDENTIALS_DIRECTORY": str(root / "tests/data/creds")})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
@example("=")  # YAML's !!value tag, which the safe loader cannot construct
def test_loader_never_raises_anything_but_config_error(text: str) -> None:
    try:
        load_config("fuzz.yaml", text=text, check_files=False, env={})
    except ConfigError as e:
        assert all(str(p).startswith("fuzz.yaml") for p in e.problems)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edged", *args], capture_output=True, text=True, timeout=120)


def test_cli_check_config_exit_codes(tmp_path: Path) -> None:
    good = write(tmp_path, "device: {name: ok}\nallow_no_cameras: true\n", "good.yaml")
    bad = write(tmp_path, "device: {nam: x}\nmqtt: {port: -1}\n", "bad.yaml")
    r = run_cli("check-config", str(good))
    assert r.returncode == 0 and "OK" in r.stdout
    r = run_cli("check-config", str(bad))
    assert r.returncode == 78
    assert f"{bad}:1:10: device.nam: unknown key" in r.stderr
    assert f"{bad}:2:14: mqtt.port:" in r.stderr
    assert "Traceback" not in r.stderr
    r = run_cli("check-config", str(tmp_path / "nope.yaml"))
    assert r.returncode == 78 and "cannot read config" in r.stderr
    dark = write(tmp_path, "device: {name: ok}\ncameras: {}\n", "dark.yaml")
    r = run_cli("check-config", str(dark))  # what `run` would refuse
    assert r.returncode == 78 and f"{dark}:2:1: cameras: no cameras configured" in r.stderr


def test_cli_schema_is_json_schema() -> None:
    r = run_cli("schema")
    schema = json.loads(r.stdout)
    assert schema["type"] == "object" and "cameras" in schema["properties"]
    assert schema["additionalProperties"] is False


def test_configuration_reference_is_up_to_date() -> None:
    from edged.config.reference import config_reference

    committed = (Path(__file__).resolve().parent.parent / "docs/configuration.md").read_text()
    assert committed == config_reference(), "run: python -m edged.config.reference > docs/configuration.md"


@pytest.mark.parametrize(
    ("text", "where"),
    [("{{}}", "fuzz.yaml:1:2: (top level)"), ("cameras:\n  ? [a, b]\n  : 1\n", "fuzz.yaml:2:5: cameras")],
)
def test_a_mapping_or_list_as_key_is_one_clear_error(text: str, where: str) -> None:
    # Found by the fuzz test below: such keys used to reach the duplicate-key check as unhashable lists.
    with pytest.raises(ConfigError) as e:
        load_config("fuzz.yaml", text=text, check_files=False, env={})
    assert str(e.value).splitlines()[-1] == f"{where}: a key must be a plain name"
