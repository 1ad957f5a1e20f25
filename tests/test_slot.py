"""The model slot is the one owner of a model's engine: nothing outside edged/serving/slot/ assigns an
engine (an `ast` scan of the package, the scripts and the tests), a server's engine is read-only, and a
model server's threads carry role names the kernel keeps (`srv:<model>`, `dec:<model>`, 15 bytes)."""

from __future__ import annotations

import ast
import threading
import time
from pathlib import Path

import pytest

from edged.infer.base import Engine
from edged.observability import threads
from edged.serving.names import thread_name
from edged.serving.server import ModelServer
from tests.support.chain import serve

ROOT = Path(__file__).resolve().parent.parent
SLOT = ROOT / "edged" / "serving" / "slot"


def _engine_assignments(path: Path) -> list[str]:
    """`x.engine = ...` (also in tuple targets, augmented or annotated) and `setattr(x, "engine", ...)`
    in one file; `self.engine` only where the class is not a model server's part (edged/serving)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    in_serving = path.is_relative_to(ROOT / "edged" / "serving")
    found = []
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AugAssign, ast.AnnAssign)):
            targets = [node.target]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "setattr"
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value == "engine"
        ):
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: setattr(..., 'engine', ...)")
        for target in targets:
            for sub in ast.walk(target):
                if not (isinstance(sub, ast.Attribute) and sub.attr == "engine"):
                    continue
                own = isinstance(sub.value, ast.Name) and sub.value.id == "self"
                if own and not in_serving:
                    continue  # a backend's own engine object (TensorRT's ICudaEngine), not a server's
                found.append(
                    f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}: {ast.unparse(target)} = ..."
                )
    return found


def test_nothing_outside_the_slot_assigns_an_engine() -> None:
    files = [
        p
        for d in ("edged", "scripts", "tests", "benchmarks")
        if (ROOT / d).is_dir()
        for p in sorted((ROOT / d).rglob("*.py"))
        if not p.is_relative_to(SLOT) and p != Path(__file__).resolve()  # this file tries it on purpose
    ]
    assert len(files) > 100  # the scan saw the tree
    offences = [o for p in files for o in _engine_assignments(p)]
    assert not offences, "assign engines through the model slot (edged.serving.slot):\n" + "\n".join(offences)
    # The scan finds what it looks for: the slot itself assigns its engine.
    assert _engine_assignments(SLOT / "slot.py")


def test_a_servers_engine_is_read_only(ocr_engines: dict[str, Engine]) -> None:
    server = serve("ppocr_det", ocr_engines["ppocr_det"])
    try:
        with pytest.raises(AttributeError):
            server.engine = ocr_engines["ppocr_rec"]  # type: ignore[misc]
        assert server.engine is server.slot.engine
    finally:
        server.close()
    assert isinstance(ModelServer.engine, property) and ModelServer.engine.fset is None


def test_server_threads_carry_role_names_the_kernel_keeps(ocr_engines: dict[str, Engine]) -> None:
    assert thread_name("srv", "text_det") == "srv:text_det"
    assert thread_name("adopt", "a_very_long_model") == "adopt:a_very_lo"
    assert thread_name("dec", "plaque_é_très_longue") == "dec:plaque_é_t"  # never half a character
    assert thread_name("srv", "é" * 20) == "srv:" + "é" * 5  # 14 bytes: the 6th would be cut in half
    threads.install()
    server = serve("ppocr_det", ocr_engines["ppocr_det"])
    try:
        mine = {t.name: t.native_id for t in threading.enumerate() if t.name.endswith(":ppocr_det")}
        assert set(mine) == {"srv:ppocr_det", "dec:ppocr_det"}, mine

        def comm(tid: int | None) -> str:
            return Path(f"/proc/self/task/{tid}/comm").read_text().strip()

        deadline = time.monotonic() + 5  # a thread names itself once it runs (edged.observability.threads)
        while time.monotonic() < deadline and any(comm(tid) != name for name, tid in mine.items()):
            time.sleep(0.01)
        assert {comm(tid) for tid in mine.values()} == set(mine)
    finally:
        server.close()
