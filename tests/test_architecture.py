"""The layering rules of docs/architecture.md, checked on the source tree itself."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "vrx"
ARCHITECTURE_DOC = SRC.parent / "docs" / "architecture.md"
MAX_LINES = 350
# Names of the run folder's entries: only vrx/run.py may join them onto a path (metrics.json and
# report.html are left out: the toy model folder and the demo folder have files of those names too).
RUN_FOLDER_NAMES = {"run.json", "concepts", "cache", "patches", "graphs", "grn", "purity.json",
                    "matches.safetensors", "experiments"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _is_package(name: str) -> bool:
    return MODULES.get(name, Path()).name == "__init__.py"


def _type_checking_lines(tree: ast.AST) -> set[int]:
    """Line numbers inside ``if TYPE_CHECKING:`` blocks (imports for annotations only)."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def _imports(name: str, path: Path) -> set[str]:
    """The vrx modules ``name`` imports, at module level or inside functions (not for type checking)."""
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    package = name if _is_package(name) else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in MODULES else target)
    # Importing a module runs its parent packages first; those edges are not the module's own.
    return {m for m in found if m in MODULES and m != name and not name.startswith(m + ".")}


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def test_no_library_module_imports_the_cli():
    offenders = {name: sorted(m for m in deps if m == "vrx.cli" or m.startswith("vrx.cli."))
                 for name, deps in GRAPH.items()
                 if not (name in ("vrx.cli", "vrx.__main__") or name.startswith("vrx.cli."))}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_no_import_cycles():
    # Tarjan's strongly connected components: any component of more than one module is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(GRAPH[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in sorted(GRAPH):
        if v not in index:
            visit(v)
    assert cycles == []


def test_cycle_check_can_fail():
    """The import scan sees lazy imports inside functions, which is how cycles were hidden before."""
    tree_deps = _imports("vrx.stages", MODULES["vrx.stages"])
    assert "vrx.run" in tree_deps and "vrx.concepts.extractor" in tree_deps


def test_only_run_spells_run_folder_paths():
    offenders = []
    for name, path in MODULES.items():
        if name == "vrx.run":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div)
                    and isinstance(node.right, ast.Constant) and node.right.value in RUN_FOLDER_NAMES):
                offenders.append(f"{path.relative_to(SRC)}:{node.lineno} / {node.right.value!r}")
    assert offenders == []


def test_large_modules_are_explained():
    doc = ARCHITECTURE_DOC.read_text()
    too_long = [str(path.relative_to(SRC)) for path in MODULES.values()
                if len(path.read_text().splitlines()) > MAX_LINES
                and str(path.relative_to(SRC / "vrx")) not in doc]
    assert too_long == []


HEAVY = ("torch", "matplotlib", "captum", "torch_geometric", "skimage", "sklearn", "scipy")


@pytest.mark.parametrize("code", [
    "import vrx",
    "import vrx.cli; vrx.cli.build_parser()",
])
def test_light_entry_points_import_no_heavy_library(code):
    probe = f"{code}\nimport sys\nprint(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_public_api_is_importable_from_the_package():
    import vrx

    for name in ("load_model", "ClassifierAdapter", "ConceptExtractor", "SCGBuilder", "Distiller",
                 "Interpreter", "Run"):
        assert callable(getattr(vrx, name)), name
    with pytest.raises(AttributeError):
        vrx.no_such_thing  # noqa: B018
