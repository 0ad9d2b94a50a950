"""Project layout: no import cycles between project modules (module-level and function-level imports alike)."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("compress", "prune", "quant", "finetune", "eval", "bench")


def project_modules() -> dict[str, Path]:
    """Dotted module name -> file, for every .py under the project packages (a package is its __init__)."""
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, modules: dict) -> dict[str, int]:
    """{project module imported: first line} for every import statement in the file, wherever it sits.
    `from a import b` counts as an import of a.b when that is a module, else of a."""

    def known(target: str | None) -> str | None:
        while target and target not in modules:
            target = target.rpartition(".")[0]
        return target or None

    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [known(a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module
            if node.level:
                pkg = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                pkg = pkg[: len(pkg) - node.level + 1]
                base = ".".join(pkg + ([node.module] if node.module else []))
            targets = [known(f"{base}.{a.name}") if f"{base}.{a.name}" in modules else known(base) for a in node.names]
        for t in targets:
            if t and t != name:
                found.setdefault(t, node.lineno)
    return found


def find_cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, sccs = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                sccs.append(sorted(scc))

    for v in graph:
        if v not in index:
            visit(v)
    return sccs


def test_cycle_finder_sees_function_level_imports(tmp_path):
    graph = {"a": {"b": 1}, "b": {"c": 3}, "c": {"a": 9}, "d": {"a": 2}}
    assert find_cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycles():
    modules = project_modules()
    assert "compress.runtime.linear" in modules and "eval.evaluate" in modules
    graph = {m: imports(m, p, modules) for m, p in modules.items()}
    cycles = find_cycles(graph)
    detail = [" ; ".join(f"{a}:{graph[a][b]} -> {b}" for a in scc for b in graph[a] if b in scc) for scc in cycles]
    assert not cycles, "import cycles (module:line -> module):\n" + "\n".join(detail)
