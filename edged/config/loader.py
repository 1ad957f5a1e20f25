"""YAML -> Config with errors that point at file:line:column and the key path, all at once.

The YAML itself (locations, `${VAR}` and `${cred:NAME}` substitution) is read by yaml_source.py; this
module validates it against the schema (schema.py), resolves relative paths against the config's folder,
checks kind defaults and decoder parameters and, at check time, opens the model files (files.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from edged.config.analytics_check import analytics_problems, raw_analytics_problems
from edged.config.files import model_file_problems
from edged.config.partial import raw_problems, suggest_key
from edged.config.problems import ConfigError, Loc, Problem, format_path
from edged.config.schema import Config, reference_problems
from edged.config.yaml_source import parse_yaml


def _pydantic_message(err: dict[str, Any]) -> str:
    msg = str(err["msg"])
    if err["type"] == "extra_forbidden":
        close = suggest_key(tuple(err["loc"]))
        return f"unknown key; did you mean `{close}`?" if close else "unknown key (typo?)"
    if err["type"] == "missing":
        return "required key is missing"
    return msg.removeprefix("Value error, ")


def _resolve_paths(cfg: Config, base: Path) -> None:
    def rel(p: Path | None) -> Path | None:
        return p if p is None or p.is_absolute() else (base / p)

    cfg.state_dir = rel(cfg.state_dir) or cfg.state_dir
    cfg.mqtt.outbox.dir = rel(cfg.mqtt.outbox.dir) or cfg.mqtt.outbox.dir
    cfg.thumbnails.dir = rel(cfg.thumbnails.dir)
    for tls_field in ("ca_file", "cert_file", "key_file"):
        setattr(cfg.mqtt.tls, tls_field, rel(getattr(cfg.mqtt.tls, tls_field)))
    for m in cfg.models.values():
        m.path = rel(m.path) or m.path
        m.labels = rel(m.labels)
        m.tensorrt.cache_dir = rel(m.tensorrt.cache_dir) or m.tensorrt.cache_dir
        m.tensorrt.calibration_cache = rel(m.tensorrt.calibration_cache)
        m.update.folders = [rel(f) or f for f in m.update.folders]
    for cam in cfg.cameras.values():
        for scheme in ("file://", "dir://"):
            rest = cam.source[len(scheme) :]
            if cam.source.startswith(scheme) and not rest.startswith("/"):
                # Keep a trailing "/": jetson-utils reads `file://dir/` as an image sequence.
                cam.source = scheme + str(base / rest) + ("/" if rest.endswith("/") else "")


NO_CAMERAS = (
    "no cameras configured: edged would run dark while reporting ready; add a camera, or set "
    "`allow_no_cameras: true` (top level) to run without one on purpose"
)


def _semantic_problems(cfg: Config, check_files: bool) -> list[tuple[Loc, str]]:
    from edged.decoders.registry import get_decoder  # decoders are pure numpy; importing them starts nothing

    problems: list[tuple[Loc, str]] = list(reference_problems(cfg)) + analytics_problems(cfg)
    for name, m in cfg.models.items():
        at: Loc = ("models", name)
        try:
            decoder = get_decoder(m.kind)
        except KeyError as e:
            problems.append(((*at, "kind"), str(e.args[0])))
            continue
        try:
            decoder.Params.model_validate(m.decode)
        except ValidationError as e:
            for err in e.errors():
                problems.append(((*at, "decode", *err["loc"]), _pydantic_message(dict(err))))
        if check_files:
            problems.extend(((*at, k), msg) for k, msg in model_file_problems(m.model_file, m.labels))
    if cfg.mqtt.tls.enabled and check_files:
        for f in ("ca_file", "cert_file", "key_file"):
            p = getattr(cfg.mqtt.tls, f)
            if p is not None and not Path(p).is_file():
                problems.append((("mqtt", "tls", f), f"file not found: {p}"))
    return problems


def load_config(
    path: str | Path,
    *,
    env: dict[str, str] | None = None,
    check_files: bool = True,
    text: str | None = None,
    require_cameras: bool = False,
) -> Config:
    """Read and validate a config file. Raises ConfigError listing every problem.

    With `require_cameras` (what `run` and reloads load) a config without cameras is a problem unless it
    sets `allow_no_cameras: true`.
    """
    path = Path(path)
    file = str(path)
    if text is None:
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError([Problem(file, 0, 0, "", f"cannot read config: {e.strerror}")]) from None
        except UnicodeDecodeError:
            raise ConfigError([Problem(file, 0, 0, "", "config is not UTF-8 text")]) from None
    data, located = parse_yaml(text, file, env)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            [
                Problem(
                    file,
                    1,
                    1,
                    "",
                    "the top level must be a mapping of keys (device, mqtt, models, cameras, ...)",
                )
            ]
        )

    def problem(loc: Loc, msg: str, at_key: bool = False) -> Problem:
        line, col = located.find(loc, at_key)
        return Problem(file, line, col, format_path(loc), msg)

    try:
        cfg = Config.model_validate(data)
    except ValidationError as e:
        found = [
            problem(tuple(err["loc"]), _pydantic_message(dict(err)), at_key=err["type"] == "extra_forbidden")
            for err in e.errors()
        ]
        # Report references and model files now too, not after the schema errors are fixed; a key
        # the schema already complained about is not reported twice.
        seen = {p.path for p in found}
        raw = raw_problems(data, path.parent.resolve(), check_files)
        raw += raw_analytics_problems(data, path.parent.resolve())
        found += [p for p in (problem(loc, msg) for loc, msg in raw) if p.path not in seen]
        raise ConfigError(sorted(found, key=lambda p: (p.line, p.column))) from None
    _resolve_paths(cfg, path.parent.resolve())
    problems = _semantic_problems(cfg, check_files)
    if require_cameras and not cfg.cameras and not cfg.allow_no_cameras:
        problems.append((("cameras",), NO_CAMERAS))
    if problems:
        raise ConfigError([problem(loc, msg) for loc, msg in problems])
    return cfg
