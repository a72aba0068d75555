"""The import picture (issue 13): no cycles, and no arrow running back up the layers.

Read from the source with `ast`, imports inside functions included (a cycle broken only
by importing late is still a cycle a reader has to untangle), imports under
`if TYPE_CHECKING:` left out (they never run). Layers, bottom up: evaluator.engine
(plain TF/NumPy), evaluator.services and selectors (Django), leaderboard (pages, API,
commands); bench/ and devkit/ stand beside them, and tests sit on top.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("evaluator", "leaderboard", "bench", "devkit", "tests")

# The one arrow from the services up into leaderboard beyond its models, and why: the
# worker's duplicate check at acceptance answers with what the uploader may see of the
# board (leaderboard.selectors' visibility rule) and a link to the page.
ALLOWED_UP = {("evaluator.services.pipeline", "leaderboard.duplicates")}


def _modules(root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    found = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[0] not in packages or "migrations" in parts or ".venv" in parts:
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module `name` refers to (a package's attribute resolves to the package)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_graph(root: Path, packages: tuple[str, ...] = PACKAGES) -> dict[str, set[str]]:
    """module -> project modules it imports, anywhere in its body."""
    modules = _modules(root, packages)
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]

        def visit(node: ast.AST, name: str = name, package: str = package) -> None:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                    continue
                targets: list[str] = []
                if isinstance(child, ast.Import):
                    targets = [alias.name for alias in child.names]
                elif isinstance(child, ast.ImportFrom):
                    base = child.module or ""
                    if child.level:
                        anchor = package.split(".")[: len(package.split(".")) - child.level + 1]
                        base = ".".join(anchor + ([base] if base else []))
                    targets = [base] + [f"{base}.{alias.name}" for alias in child.names]
                for target in targets:
                    resolved = _resolve(target, modules)
                    if resolved and resolved != name:
                        graph[name].add(resolved)
                visit(child)

        visit(ast.parse(path.read_text(encoding="utf-8")))
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


GRAPH = import_graph(ROOT)


def _arrows(source: str, target: str) -> set[tuple[str, str]]:
    return {(m, t) for m, ts in GRAPH.items() if m.startswith(source) for t in ts if t.startswith(target)}


def test_the_graph_reader_finds_a_cycle_through_a_late_import(tmp_path) -> None:
    pkg = tmp_path / "evaluator"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from evaluator import b\n")
    (pkg / "b.py").write_text("def f():\n    from . import c\n")
    (pkg / "c.py").write_text("import evaluator.a as a\nfrom typing import TYPE_CHECKING\n"
                              "if TYPE_CHECKING:\n    from evaluator import d\n")
    (pkg / "d.py").write_text("from evaluator.c import x\n")
    graph = import_graph(tmp_path, ("evaluator",))
    assert graph["evaluator.b"] == {"evaluator", "evaluator.c"}
    assert "evaluator.d" not in graph["evaluator.c"]  # only for the type checker
    assert cycles(graph) == [["evaluator.a", "evaluator.b", "evaluator.c"]]


def test_the_project_has_no_import_cycle() -> None:
    assert len(GRAPH) > 100  # the reader saw the project
    assert cycles(GRAPH) == []


def test_the_engine_imports_nothing_above_it() -> None:
    up = {(m, t) for m, ts in GRAPH.items() if m.startswith("evaluator.engine")
          for t in ts if not t.startswith("evaluator.engine") and t != "evaluator"}
    assert up == set()


def test_the_services_reach_leaderboard_only_for_its_models() -> None:
    up = _arrows("evaluator.services", "leaderboard") | _arrows("evaluator.selectors", "leaderboard")
    assert {(m, t) for m, t in up if t != "leaderboard.models"} == ALLOWED_UP
    # Tasks are queued by name: no service imports the Celery module or the tasks.
    assert _arrows("evaluator.services", "leaderboard.celery") == set()
    assert _arrows("evaluator.services", "evaluator.tasks") == set()


def test_bench_and_tests_stand_apart() -> None:
    assert _arrows("bench", "tests") == _arrows("devkit", "tests") == set()
    assert _arrows("tests", "bench") == set()
    assert _arrows("devkit", "bench") == set()
