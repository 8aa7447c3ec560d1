"""The import structure of src/rshash: the layers stated once, in pyproject.toml's
import-linter contracts, hold on the real import graph (grimp reads every import,
function-level ones included), every module of rshash is in a layer, and no module
reaches itself through imports (no cycle)."""

import subprocess
import sys
import tomllib
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]


def contracts() -> list[dict]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return config["tool"]["importlinter"]["contracts"]


def strongly_connected(graph: grimp.ImportGraph) -> list[set[str]]:
    """Tarjan's components of more than one module (or a module importing itself)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(m, counter=[0]):  # noqa: B006 (a counter shared by the recursion)
        index[m] = low[m] = counter[0]
        counter[0] += 1
        stack.append(m)
        on_stack.add(m)
        for n in graph.find_modules_directly_imported_by(m):
            if n not in index:
                visit(n)
                low[m] = min(low[m], low[n])
            elif n in on_stack:
                low[m] = min(low[m], index[n])
        if low[m] == index[m]:
            comp = set()
            while True:
                n = stack.pop()
                on_stack.discard(n)
                comp.add(n)
                if n == m:
                    break
            if len(comp) > 1 or m in graph.find_modules_directly_imported_by(m):
                found.append(comp)

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for m in sorted(graph.modules):
        if m not in index:
            visit(m)
    return found


def test_the_layer_contracts_hold_on_the_real_import_graph():
    lint = Path(sys.executable).with_name("lint-imports")
    run = subprocess.run(
        [str(lint), "--no-cache"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"{len(contracts())} kept, 0 broken" in run.stdout, run.stdout


def test_every_module_is_in_a_layer():
    layers = contracts()[0]["layers"]
    stated = {name.strip() for layer in layers for name in layer.split("|")}
    graph = grimp.build_graph("rshash")
    top = {".".join(m.split(".")[:2]) for m in graph.modules if m != "rshash"}
    assert top - stated == set(), "modules in no layer of pyproject.toml's contract"
    assert stated - top == set(), "layers naming no module"


def test_no_import_cycles_in_rshash():
    graph = grimp.build_graph("rshash")
    assert strongly_connected(graph) == []


def test_the_cycle_check_finds_a_cycle():
    """The check itself: two modules importing each other are found."""
    graph = grimp.ImportGraph()
    for m in ("p", "p.a", "p.b", "p.c"):
        graph.add_module(m)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.b", imported="p.a")
    graph.add_import(importer="p.c", imported="p.a")
    assert strongly_connected(graph) == [{"p.a", "p.b"}]
