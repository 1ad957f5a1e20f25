"""The typed errors of the config layer: every problem found in a config file, with where it was written.

`ConfigError` carries all of them at once (check-config and a rejected reload list every problem in one
run); `Problem` is one `file:line:column: key.path: message` line.
"""

from __future__ import annotations

from dataclasses import dataclass

Loc = tuple[str | int, ...]  # a key path, e.g. ("cameras", "gate", "chain", 1, "model")


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
