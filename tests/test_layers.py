"""Imports point down the layers: a check over every module of edged/ with the stdlib `ast`.

The layer order is defined here, once (README.md's "Layers" section and the design notes mirror it; a
test below keeps README in step). Every folder of edged/ is one part; the modules at the root of edged/
(`__init__`, `types`, `fileio`) are the part `base`, below everything, and `__main__` belongs to `cli`.
Parts on one level are siblings: they may not import each other.

Rules, each failure printed as `file:line: what: rule`:
- an import points down the list, or stays inside its own part;
- a few imports the order would allow are forbidden by the design notes (FORBIDDEN, with the reason);
- nothing in edged/ imports tests/ (test code never ships in the daemon);
- no import cycle between modules.
Every import counts: module level, inside functions, under `if TYPE_CHECKING:`. A part missing from the
list is an error too, so a new folder gets a place in the order before it gets code.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass
from pathlib import Path

from tests.support.paths import ROOT

# Top to bottom: a part may import the parts on lower levels only.
LAYERS: list[tuple[str, ...]] = [
    ("cli",),  # the commands; __main__
    ("daemon",),  # wires every part: lifecycle, signals, reloads, MQTT commands, status
    ("pipeline", "publish"),  # a camera's chain | where its results go: neither knows the other
    ("analytics",),  # lines, zones, speeds over a camera's tracks: what the chain and publish share
    ("serving",),  # one model server per model; loading a configured model
    ("capture", "config", "infer"),  # sources | the config schema and loader | engines
    ("decoders",),  # decoders per model kind (the registry of kinds)
    ("gpu",),  # CUDA context, lanes, buffers, kernels: plain arguments, no config
    ("preprocess",),  # the preprocessing contract and its CPU reference
    ("observability", "demo"),  # counters and what reads them | the sample videos
    ("base",),  # edged/__init__.py (version, exit codes), types.py, fileio.py
]

# Imports the order allows but the design notes forbid: (importer, imported) -> why.
FORBIDDEN: dict[tuple[str, str], str] = {
    ("infer", "decoders"): "an engine runs tensors and knows no decoder or chain",
    ("config", "gpu"): "config is data and starts nothing",
    **{
        ("publish", part): "publish takes results and config: it never runs a source, a model or the GPU"
        for part in ("serving", "capture", "infer", "decoders", "gpu", "preprocess")
    },
}

ROOT_PARTS = {"__main__": "cli"}  # modules at the root of the package that belong to a part


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # the imported module (the deepest one that exists)
    file: Path
    line: int


def modules(package_dir: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py under `package_dir` (a package's name: its __init__)."""
    found = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = [package_dir.name, *path.relative_to(package_dir).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _nearest(name: str, known: dict[str, Path]) -> str | None:
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports(package_dir: Path) -> tuple[dict[str, Path], list[Import]]:
    """Every import statement of every module, resolved to the module it names (outside ones dropped,
    except `tests`, which is kept so that importing it can be reported)."""
    known = modules(package_dir)
    found: list[Import] = []
    for module, path in known.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: from the module's package, up level - 1 packages
                    base = module.split(".") if is_package else module.split(".")[:-1]
                    base = base[: len(base) - node.level + 1]
                    prefix = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    prefix = node.module or ""
                if prefix.split(".")[0] == "tests":
                    names = [prefix]
                else:
                    names = [f"{prefix}.{a.name}" for a in node.names]  # a submodule, or a name in prefix
            for name in names:
                top = name.split(".")[0]
                target = (
                    name if top == "tests" else _nearest(name, known) if top == package_dir.name else None
                )
                if target is not None and target != module:
                    found.append(Import(module, target, path, node.lineno))
    return known, sorted(set(found), key=lambda i: (i.module, i.line, i.target))


def part_of(module: str, packages: set[str]) -> str:
    """The part a module belongs to: its folder under the package, else `base` (or ROOT_PARTS)."""
    parts = module.split(".")
    if len(parts) >= 2 and parts[1] in packages:
        return parts[1]
    return ROOT_PARTS.get(parts[1], "base") if len(parts) == 2 else "base"


def cycles(edges: dict[str, dict[str, Import]]) -> list[list[Import]]:
    """One cycle per strongly connected component of the module graph (Tarjan), as its import steps."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(comp)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    found = []
    for comp in components:
        # Walk from the smallest module along edges inside the component until a module repeats.
        start = min(comp)
        path, seen = [start], {start: 0}
        steps: list[Import] = []
        while True:
            nxt = min(w for w in edges[path[-1]] if w in comp)
            steps.append(edges[path[-1]][nxt])
            if nxt in seen:
                found.append(steps[seen[nxt] :])
                break
            seen[nxt] = len(path)
            path.append(nxt)
    return found


def check(
    package_dir: Path,
    layers: list[tuple[str, ...]] = LAYERS,
    forbidden: dict[tuple[str, str], str] = FORBIDDEN,
) -> list[str]:
    """Every broken rule, as `file:line: what: rule` (paths relative to the package's parent)."""
    packages = {p.name for p in package_dir.iterdir() if p.is_dir() and any(p.rglob("*.py"))}
    level = {part: i for i, parts in enumerate(layers) for part in parts}
    known, found = imports(package_dir)

    def where(imp: Import) -> str:
        return f"{imp.file.relative_to(package_dir.parent)}:{imp.line}"

    def describe(part: str) -> str:
        return f"{part} (level {level[part] + 1})"

    problems = []
    for part in sorted({part_of(m, packages) for m in known} - set(level)):
        problems.append(
            f"{package_dir.name}/{part}: part {part!r} is not in the layer order: "
            "give it a level in LAYERS (tests/test_layers.py) and README's layer list"
        )
    edges: dict[str, dict[str, Import]] = {}
    for imp in found:
        if imp.target.split(".")[0] == "tests":
            problems.append(
                f"{where(imp)}: {imp.module} imports {imp.target}: "
                "the package never imports test code (tests/ pass what they need in)"
            )
            continue
        edges.setdefault(imp.module, {}).setdefault(imp.target, imp)
        src, dst = part_of(imp.module, packages), part_of(imp.target, packages)
        if src == dst or src not in level or dst not in level:
            continue
        what = f"{where(imp)}: {imp.module} imports {imp.target}"
        if level[dst] < level[src]:
            problems.append(
                f"{what}: {describe(src)} may not import {describe(dst)}: imports point down the layers"
            )
        elif level[dst] == level[src]:
            problems.append(
                f"{what}: {src} and {dst} are siblings on level {level[src] + 1}: they do not import each other"
            )
        elif (src, dst) in forbidden:
            problems.append(f"{what}: {src} may not import {dst}: {forbidden[src, dst]}")
    for steps in cycles(edges):
        chain = " -> ".join([s.module for s in steps] + [steps[0].module])
        lines = ", ".join(where(s) for s in steps)
        problems.append(f"{lines}: import cycle {chain}: modules may not import each other in a circle")
    return problems


# -- the real tree ---------------------------------------------------------------------------------


def test_edged_imports_point_down_the_layers() -> None:
    problems = check(ROOT / "edged")
    for p in problems:
        print(p)
    assert not problems, "\n" + "\n".join(problems)


def test_every_folder_has_a_level_and_every_level_a_folder() -> None:
    folders = {p.name for p in (ROOT / "edged").iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    listed = {part for parts in LAYERS for part in parts} - {"base"}
    assert folders == listed, (
        f"folders without a level: {folders - listed}; levels without a folder: {listed - folders}"
    )


def test_readme_shows_the_same_layer_order() -> None:
    order = " > ".join(" | ".join(parts) for parts in LAYERS)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert order in readme, f"README.md should show the layer order as: {order}"


# -- the checker itself, on small trees it must reject -----------------------------------------------


def _tree(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "edged"
    for name, text in files.items():
        path = pkg / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return pkg


CLEAN = {
    "__init__.py": "",
    "__main__.py": "from edged.cli.main import main\n",
    "types.py": "",
    "cli/__init__.py": "",
    "cli/main.py": "from edged.daemon import run\nfrom . import util\n",
    "cli/util.py": "",
    "daemon/__init__.py": "from edged.daemon.run import run\n",
    "daemon/run.py": "from edged.gpu.lane import Lane\nfrom edged import types\n",
    "gpu/preprocessors.py": "",
    "gpu/lane.py": "import edged.types\n",
}


def test_checker_passes_a_clean_tree(tmp_path: Path) -> None:
    assert check(_tree(tmp_path, CLEAN)) == []


def test_checker_reports_upward_sideways_forbidden_and_test_imports(tmp_path: Path) -> None:
    pkg = _tree(
        tmp_path,
        {
            **CLEAN,
            "gpu/lane.py": """\
                import edged.types


                def later():
                    from edged.cli.util import helper  # upward, inside a function
            """,
            "publish/__init__.py": "",
            "publish/sink.py": "from ..pipeline import flow\nfrom edged.infer import base\n",
            "pipeline/__init__.py": "",
            "pipeline/flow.py": "",
            "infer/factory.py": "",
            "infer/base.py": "from tests.support.broker import Mosquitto\n",
        },
    )
    problems = check(pkg)
    text = "\n".join(problems)
    assert (
        "edged/gpu/lane.py:5: edged.gpu.lane imports edged.cli.util: gpu (level 8) may not import cli (level 1)"
        in text
    )
    assert (
        "edged/publish/sink.py:1: edged.publish.sink imports edged.pipeline.flow: publish and pipeline are siblings"
        in text
    )
    assert (
        "edged/publish/sink.py:2: edged.publish.sink imports edged.infer.base: publish may not import infer"
        in text
    )
    assert (
        "edged/infer/base.py:1: edged.infer.base imports tests.support.broker: the package never imports test code"
        in text
    )
    assert len(problems) == 4, text


def test_checker_reports_cycles_and_unknown_parts(tmp_path: Path) -> None:
    pkg = _tree(
        tmp_path,
        {
            **CLEAN,
            "gpu/a.py": "from edged.gpu import b\n",
            "gpu/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from edged.gpu.a import x\n",
            "extras/__init__.py": "",
            "extras/thing.py": "",
        },
    )
    problems = check(pkg)
    text = "\n".join(problems)
    assert (
        "edged/gpu/a.py:1, edged/gpu/b.py:3: import cycle edged.gpu.a -> edged.gpu.b -> edged.gpu.a" in text
    )
    assert "edged/extras: part 'extras' is not in the layer order" in text
    assert len(problems) == 2, text


def test_package_inits_hold_a_docstring_only() -> None:
    """A sub-package's `__init__.py` is its docstring: no factories, no re-exports, no registering side
    effects, so every name is imported from the module that defines it (README.md, folder table)."""
    offending = []
    for init in sorted((ROOT / "edged").glob("*/**/__init__.py")):  # edged/__init__.py is `base`
        body = ast.parse(init.read_text(encoding="utf-8")).body
        if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
            body = body[1:]
        offending += [f"{init.relative_to(ROOT)}:{node.lineno}" for node in body]
    assert offending == [], f"statements beyond the docstring: {offending}"
