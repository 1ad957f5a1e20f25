"""The daemon wires its parts through constructors: no module of edged/daemon/ assigns an attribute of
another object (`obj.attr = ...`, `self.part.attr = ...`, `setattr(obj, ...)`); where a real cycle
needs a late collaborator, the part offers one documented `attach()` and only the allowed ones are
called. Read with the stdlib `ast`, so the check sees every statement, inside functions too."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from edged.daemon.supervisor import Supervisor
from edged.observability.health.server import HealthServer
from edged.publish.routing import ResultSink
from edged.serving.slot.slot import ModelSlot

DAEMON = Path(__file__).resolve().parent.parent / "edged" / "daemon"

# The attach() methods daemon/ may call, each closing one cycle its docstring names.
ATTACH = {
    "ResultSink": ResultSink.attach,  # Home Assistant discovery reads the status that reads the cameras
    "Supervisor": Supervisor.attach,  # live updates reach the loaded models through the supervisor
    "HealthServer": HealthServer.attach,  # answers "starting" before the daemon that it reports exists
    "ModelSlot": ModelSlot.attach,  # the switch reports are made after the supervisor that loads models
}
# Receivers of those calls in daemon/, as written there.
ATTACH_CALLS = {"self.sink.attach", "self.supervisor.attach", "self.health.attach", "slot.attach"}


def late_wiring(source: str) -> list[tuple[int, str]]:
    """(line, target) of every assignment to another object's attribute, and every setattr()."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Assign):
            targets = [t for tt in node.targets for t in (tt.elts if isinstance(tt, ast.Tuple) else [tt])]
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "setattr":
            found.append((node.lineno, "setattr(" + ast.unparse(node.args[0]) + ", ...)"))
            continue
        else:
            continue
        for t in targets:
            if isinstance(t, ast.Attribute) and not (isinstance(t.value, ast.Name) and t.value.id == "self"):
                found.append((node.lineno, ast.unparse(t)))
    return found


def attach_calls(source: str) -> list[tuple[int, str]]:
    return [
        (node.lineno, ast.unparse(node.func))
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "attach"
    ]


def test_the_scan_finds_late_wiring() -> None:
    source = (
        "class D:\n"
        "    def __init__(self, sink):\n"
        "        self.sink = sink\n"  # its own attribute: fine
        "        self.sink.publisher = 1\n"
        "        sink.hass, other = 2, 3\n"
        "        setattr(sink, 'x', 4)\n"
        "        self.sink.attach(5)\n"
    )
    assert late_wiring(source) == [(4, "self.sink.publisher"), (5, "sink.hass"), (6, "setattr(sink, ...)")]
    assert attach_calls(source) == [(7, "self.sink.attach")]


def test_daemon_wires_through_constructors_and_documented_attach() -> None:
    wiring, calls = [], []
    for path in sorted(DAEMON.glob("*.py")):
        source = path.read_text()
        wiring += [f"{path.name}:{line}: {target}" for line, target in late_wiring(source)]
        calls += [
            f"{path.name}:{line}: {call}" for line, call in attach_calls(source) if call not in ATTACH_CALLS
        ]
    assert not wiring, (
        "attributes of other objects assigned in edged/daemon/ (pass them to the constructor):\n"
        + ("\n".join(wiring))
    )
    assert not calls, "attach() calls not in the allow-list:\n" + "\n".join(calls)


def test_each_allowed_attach_says_why() -> None:
    for owner, method in ATTACH.items():
        doc = inspect.getdoc(method) or ""
        assert len(doc) > 60, f"{owner}.attach has no docstring saying which cycle it closes"
