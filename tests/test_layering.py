"""The library's import graph: no module imports one that imports it back (function-level imports
count, ``if TYPE_CHECKING:`` blocks do not), and the library never imports the app."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from conftest import REPO


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports (anywhere in the file except TYPE_CHECKING blocks)."""
    root = package.parent
    modules = {}
    for f in package.rglob("*.py"):
        parts = f.relative_to(root).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in modules}
    for mod, f in modules.items():
        tree = ast.parse(f.read_text(encoding="utf-8"))
        typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                       and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # `from pkg import sub` imports the module pkg.sub when there is one, else pkg
                names = [resolve(f"{node.module}.{a.name}") or node.module for a in node.names]
            else:
                continue
            for name in names:
                target = resolve(name)
                if target and target != mod and not mod.startswith(target + "."):  # a parent package runs first anyway
                    graph[mod].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[v] = min(low[v], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    found.append(sorted(comp))
    return found


def test_the_finder_sees_a_cycle_through_a_function_level_import(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import B\n")
    (pkg / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.c import C\n"
                              "def f():\n    from pkg import a\n")
    (pkg / "c.py").write_text("import pkg.b\n")
    assert cycles(import_graph(pkg)) == [["pkg.a", "pkg.b"]]  # b -> c is typing only: no cycle there


def test_library_modules_import_no_cycle_and_never_the_app():
    graph = import_graph(REPO / "vggt_mv")
    assert len(graph) > 50
    assert cycles(graph) == []
    assert "vggt_mv.presets" not in graph["vggt_mv.config"]  # presets register themselves with the config
    for path in (REPO / "vggt_mv").rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert "vggt_mv_app" not in text and "from app" not in text, path


def test_presets_are_there_whatever_is_imported_first():
    code = "from vggt_mv.config import ModelConfig; print(ModelConfig.preset('tiny').embed_dim)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "64", out.stderr
