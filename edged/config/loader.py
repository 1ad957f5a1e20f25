"""YAML -> Config with errors that point at file:line:column and the key path, all at once.

Also: `${VAR}` / `${VAR:-default}` from the environment, `${cred:NAME}` from systemd's
$CREDENTIALS_DIRECTORY (LoadCredential=), relative paths resolved against the config's folder,
kind defaults and decoder parameters checked, and model files opened at check time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from edged.config.models import Config, reference_problems
from edged.config.partial import raw_problems, suggest_key

Loc = tuple[str | int, ...]
_VAR = re.compile(r"\$\{([^}]+)\}")


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: only true/false. YAML 1.1 reads `on:` (a chain key) and
    `no`/`off`/`yes` as booleans, which turns `on: text_det` into `True: text_det`."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


@dataclass(frozen=True)
class Problem:
    file: str
    line: int  # 1-based; 0 when unknown
    column: int
    path: str  # dotted key path, e.g. cameras.gate.chain[1].model
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        return f"{where}: {self.path or '(top level)'}: {self.message}"


class ConfigError(Exception):
    """Every problem found in a config file; str() gives one line per problem."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def format_path(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


class _Located:
    """The YAML node tree, to find where a key path was written."""

    def __init__(self, root: yaml.Node | None):
        self.root = root

    def find(self, loc: Loc, at_key: bool = False) -> tuple[int, int]:
        """Line/column of the value at `loc` (or of its key, with at_key), else of the nearest parent."""
        node = self.root
        best = (node.start_mark.line + 1, node.start_mark.column + 1) if node is not None else (0, 0)
        for part in loc:
            if isinstance(node, yaml.MappingNode):
                for key, value in node.value:
                    if key.value == str(part):
                        # Point at the key for missing/extra problems, descend into the value for the rest.
                        best = (key.start_mark.line + 1, key.start_mark.column + 1)
                        node = value
                        break
                else:
                    return best
            elif (
                isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value)
            ):
                node = node.value[part]
                best = (node.start_mark.line + 1, node.start_mark.column + 1)
            else:
                return best
        if not at_key and node is not None and not isinstance(node, yaml.MappingNode | yaml.SequenceNode):
            best = (node.start_mark.line + 1, node.start_mark.column + 1)
        return best


def _substitute(value: str, env: dict[str, str], creds_dir: str | None) -> str:
    def repl(m: re.Match[str]) -> str:
        expr = m.group(1)
        if expr.startswith("cred:"):
            name = expr[5:]
            if not creds_dir:
                raise ValueError(
                    f"${{{expr}}}: $CREDENTIALS_DIRECTORY is not set (use systemd LoadCredential=)"
                )
            path = Path(creds_dir) / name
            try:
                return path.read_text().strip()
            except OSError as e:
                raise ValueError(f"${{{expr}}}: cannot read credential {path}: {e.strerror}") from None
        name, sep, default = expr.partition(":-")
        if name in env:
            return env[name]
        if sep:
            return default
        raise ValueError(f"${{{name}}}: environment variable {name} is not set")

    return _VAR.sub(repl, value)


def _reader_position(text: str, pos: int | None) -> tuple[int, int]:
    if pos is None:
        return 0, 0
    before = text[:pos]
    return before.count("\n") + 1, pos - (before.rfind("\n") + 1) + 1


def _walk_scalars(node: yaml.Node, loc: Loc = ()) -> Iterator[tuple[yaml.ScalarNode, Loc]]:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield from _walk_scalars(value, (*loc, key.value))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _walk_scalars(item, (*loc, i))
    elif isinstance(node, yaml.ScalarNode):
        yield node, loc


def _complex_keys(node: yaml.Node, loc: Loc = ()) -> Iterator[tuple[yaml.Node, Loc]]:
    """Mapping keys that are themselves mappings or lists (`{[a]: 1}`): no edged setting has those."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if not isinstance(key, yaml.ScalarNode):
                yield key, loc
            else:
                yield from _complex_keys(value, (*loc, key.value))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _complex_keys(item, (*loc, i))


def _duplicate_keys(node: yaml.Node, loc: Loc = ()) -> Iterator[tuple[yaml.Node, Loc]]:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if key.value in seen:
                yield key, (*loc, key.value)
            seen.add(key.value)
            yield from _duplicate_keys(value, (*loc, key.value))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _duplicate_keys(item, (*loc, i))


def parse_yaml(text: str, file: str, env: dict[str, str] | None = None) -> tuple[Any, _Located]:
    """YAML text -> (plain data with variables substituted, node locator). Raises ConfigError."""
    env = dict(os.environ if env is None else env)
    try:
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        raise ConfigError([Problem(file, line, col, "", f"invalid YAML: {e.problem}")]) from None
    except yaml.YAMLError as e:  # reader errors (control characters, bad encoding) carry no mark object
        line, col = _reader_position(text, getattr(e, "position", None))
        reason = getattr(e, "reason", None) or str(e).splitlines()[0]
        raise ConfigError([Problem(file, line, col, "", f"invalid YAML: {reason}")]) from None
    if root is None:
        return {}, _Located(None)
    complex_keys = [
        Problem(
            file,
            k.start_mark.line + 1,
            k.start_mark.column + 1,
            format_path(loc),
            "a key must be a plain name",
        )
        for k, loc in _complex_keys(root)
    ]
    if complex_keys:  # the checks below walk keys as names
        raise ConfigError(complex_keys)
    problems = [
        Problem(file, k.start_mark.line + 1, k.start_mark.column + 1, format_path(loc), "key is given twice")
        for k, loc in _duplicate_keys(root)
    ]
    creds = env.get("CREDENTIALS_DIRECTORY")
    for scalar, loc in _walk_scalars(root):
        if scalar.tag == "tag:yaml.org,2002:str" and "${" in scalar.value:
            try:
                scalar.value = _substitute(scalar.value, env, creds)
            except ValueError as e:
                problems.append(
                    Problem(
                        file,
                        scalar.start_mark.line + 1,
                        scalar.start_mark.column + 1,
                        format_path(loc),
                        str(e),
                    )
                )
    if problems:
        raise ConfigError(problems)
    try:
        data = _construct(root)
    except yaml.MarkedYAMLError as e:  # a tag the safe loader cannot build, e.g. a lone "=" (YAML's !!value)
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (0, 0)
        raise ConfigError([Problem(file, line, col, "", f"invalid YAML: {e.problem}")]) from None
    return data, _Located(root)


def _construct(root: yaml.Node) -> Any:
    loader = _Loader("")
    try:
        return loader.construct_document(root)
    finally:
        loader.dispose()


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
    from edged.models.base import get_decoder  # decoders are pure numpy; importing them starts nothing

    problems: list[tuple[Loc, str]] = list(reference_problems(cfg))
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


def model_file_problems(path: Path, labels: Path | None) -> list[tuple[str, str]]:
    """('path'|'labels', reason) when a model or labels file is missing, unreadable or not ONNX."""
    out: list[tuple[str, str]] = []
    if not path.exists():
        how = (
            "make it with scripts/quantize_models.py, or set onnxruntime.int8: false"
            if path.name.endswith(".int8.onnx")
            else "run `edged install-models` for the bundled models"
        )
        out.append(("path", f"model file not found: {path} ({how})"))
    elif not path.is_file():
        out.append(("path", f"not a file: {path}"))
    else:
        try:
            with path.open("rb") as f:
                head = f.read(16)
        except OSError as e:
            out.append(("path", f"cannot read {path}: {e.strerror}"))
        else:
            if path.suffix in (".engine", ".plan"):
                pass  # a prebuilt TensorRT plan: checked when TensorRT deserializes it
            elif not _looks_like_onnx(head):
                out.append(("path", f"{path} is not an ONNX model (bad header)"))
            else:
                reason = _onnx_loads(path)
                if reason:
                    out.append(("path", reason))
    if labels is not None and not labels.is_file():
        out.append(("labels", f"labels file not found: {labels}"))
    return out


def _looks_like_onnx(head: bytes) -> bool:
    # ModelProto starts with field 1 (ir_version, varint: tag 0x08) in every exporter we know of.
    return len(head) >= 2 and head[0] == 0x08


def _onnx_loads(path: Path) -> str | None:
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 4
    try:
        ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises private exception types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return f"{path} is not a loadable ONNX model: {first}"
    return None


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
        found += [
            p
            for p in (
                problem(loc, msg) for loc, msg in raw_problems(data, path.parent.resolve(), check_files)
            )
            if p.path not in seen
        ]
        raise ConfigError(sorted(found, key=lambda p: (p.line, p.column))) from None
    _resolve_paths(cfg, path.parent.resolve())
    problems = _semantic_problems(cfg, check_files)
    if require_cameras and not cfg.cameras and not cfg.allow_no_cameras:
        problems.append((("cameras",), NO_CAMERAS))
    if problems:
        raise ConfigError([problem(loc, msg) for loc, msg in problems])
    return cfg
