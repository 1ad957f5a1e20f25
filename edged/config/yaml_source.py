"""YAML text -> plain data, with where every key was written and the variables substituted.

YAML 1.2 booleans only (`on:` is a chain key, not `True`), mapping keys must be plain names and may not
repeat, `${VAR}` / `${VAR:-default}` come from the environment and `${cred:NAME}` from systemd's
$CREDENTIALS_DIRECTORY (LoadCredential=). Every problem is a `Problem` with its line and column; the
schema is not looked at here (edged/config/loader.py does that). Pure functions: no threads.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from edged.config.problems import ConfigError, Loc, Problem, format_path

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


class Located:
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


def parse_yaml(text: str, file: str, env: dict[str, str] | None = None) -> tuple[Any, Located]:
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
        return {}, Located(None)
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
    return data, Located(root)


def _construct(root: yaml.Node) -> Any:
    loader = _Loader("")
    try:
        return loader.construct_document(root)
    finally:
        loader.dispose()
