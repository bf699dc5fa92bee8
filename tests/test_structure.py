"""The package's import graph, read from the source (imports inside functions included): no cycle, and no
module importing one of a later stage."""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import REPO_ROOT

PACKAGE = REPO_ROOT / "src" / "simpsons"

# Each stage may import the stages before it and its own, never a later one. A sub-package is one stage, or
# names its modules ("detection.model") where they belong to different ones.
STAGES = [
    {"errors", "extras", "files", "plots", "frames", "timeline", "data", "boxes", "bundle", "models", "detection",
     "detection.placement", "detection.targets", "detection.decode", "detection.mosaic", "detection.model"},
    {"onnx_network", "backends", "prediction", "detection.bundle", "detection.detector", "detection.drawing"},
    {"evaluation", "calibration", "open_set", "confidence", "detection.evaluation", "detection.report",
     "detection.audit"},
    {"video", "labelling"},
    {"training", "export", "series", "detection.training"},
    {"web", "cli", "api", "simpsons", "detection.commands"},
]


def module_name(path: Path) -> str:
    """``src/simpsons/labelling/store.py`` -> ``simpsons.labelling.store``."""
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported_modules(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The package's modules that ``path`` imports anywhere in its code (at the top, in functions, under
    ``TYPE_CHECKING``)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return {target for target in found if target in modules and target != name}


def import_graph() -> dict[str, set[str]]:
    modules = package_modules()
    return {name: imported_modules(path, name, modules) for name, path in modules.items()}


def stage_of(name: str) -> int | None:
    """The stage of ``simpsons.X``, of ``simpsons.X.Y`` when STAGES names it, else of any module of the package
    ``simpsons.X``; None for ``simpsons``."""
    parts = name.split(".")
    if len(parts) < 2:
        return None
    for candidate in (".".join(parts[1:3]), parts[1]):
        for index, stage in enumerate(STAGES):
            if candidate in stage:
                return index
    raise AssertionError(f"{name} has no stage: add it to STAGES in {Path(__file__).name}")


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as a list of modules (the first repeated at the end), or None."""
    state: dict[str, str] = {}
    trail: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        trail.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return trail[trail.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        trail.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_import_reader_sees_every_spelling(tmp_path: Path) -> None:
    source = tmp_path / "simpsons" / "sample.py"
    source.parent.mkdir()
    source.write_text("from simpsons import data as datasets\nimport simpsons.bundle\n"
                      "from .video import probe\n\ndef later():\n    from simpsons.cli import main\n")
    modules = {name: Path() for name in ("simpsons.data", "simpsons.bundle", "simpsons.video", "simpsons.cli",
                                         "simpsons.sample", "simpsons.web")}
    assert imported_modules(source, "simpsons.sample", modules) == {
        "simpsons.data", "simpsons.bundle", "simpsons.video", "simpsons.cli"}


def test_a_cycle_is_found_and_a_tree_has_none() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_every_module_has_a_stage() -> None:
    for name in package_modules():
        stage_of(name)


def test_no_import_cycle() -> None:
    assert find_cycle(import_graph()) is None


def test_no_module_imports_a_later_stage() -> None:
    upward = [f"{name} (stage {stage_of(name)}) imports {target} (stage {stage_of(target)})"
              for name, targets in import_graph().items() for target in sorted(targets)
              if stage_of(name) is not None and stage_of(target) is not None and stage_of(target) > stage_of(name)]
    assert upward == []
