"""The package map stays true: imports point down the flow, nothing imports in a circle, and no package reaches
into another's private names. Read from the source with `ast`, so a new import that breaks the map fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import newsletter

ROOT = Path(newsletter.__file__).parent

# Top to bottom, as docs/architecture.md draws it: a module may import its own layer and the layers below it.
LAYERS = ["cli", "web", "demo", "scale", "schedule", "report", "deliver", "subscribers", "render", "compose",
          "editorial", "collect", "store", "config", "text", "newsletter"]
TOP_LEVEL = {"__main__": "cli", "settings": "config", "text": "text", "urls": "text", "__init__": "newsletter"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if "migrations" in parts:
            continue  # Alembic's scripts: loaded by Alembic, never imported
        name = ".".join(("newsletter", *parts))
        out[name.removesuffix(".__init__")] = path
    return out


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "newsletter"
    if (ROOT / parts[1]).is_dir():
        return parts[1]
    return TOP_LEVEL[parts[1]]


def _imports(module: str, path: Path) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import, including those inside functions."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, [], node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((target, [alias.name for alias in node.names], node.lineno))
    return [(t, names, line) for t, names, line in found if t == "newsletter" or t.startswith("newsletter.")]


def _resolve(target: str, names: list[str], modules: dict[str, Path]) -> list[str]:
    """The modules an import loads: `from pkg import mod` names a module, `from mod import f` does not."""
    subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in modules]
    return subs or [target]


def test_every_package_has_a_place_on_the_map() -> None:
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists() and p.name not in ("default_templates",)}
    assert packages <= set(LAYERS), f"place these in LAYERS and docs/architecture.md: {packages - set(LAYERS)}"


def test_imports_point_down_the_flow() -> None:
    modules = _modules()
    upward = []
    for module, path in modules.items():
        here = LAYERS.index(_layer(module))
        for target, names, line in _imports(module, path):
            for loaded in _resolve(target, names, modules):
                if LAYERS.index(_layer(loaded)) < here:
                    upward.append(f"{path.relative_to(ROOT.parent)}:{line} ({_layer(module)}) imports {loaded}")
    assert not upward, "imports from a later stage into an earlier one:\n" + "\n".join(upward)


def test_no_import_circles() -> None:
    modules = _modules()
    graph = {m: set() for m in modules}
    for module, path in modules.items():
        for target, names, _ in _imports(module, path):
            for loaded in _resolve(target, names, modules):
                if loaded in modules and loaded != module and not module.startswith(loaded + "."):
                    graph[module].add(loaded)  # a module's own package __init__ runs first anyway: no circle
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_private_names_across_packages() -> None:
    modules = _modules()
    reached = []
    for module, path in modules.items():
        for target, names, line in _imports(module, path):
            if _layer(target) == _layer(module):
                continue
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            private += [p for p in target.split(".") if p.startswith("_") and not p.startswith("__")]
            if private:
                reached.append(f"{path.relative_to(ROOT.parent)}:{line} takes {', '.join(private)} from {target}")
    assert not reached, "private names used from another package:\n" + "\n".join(reached)
