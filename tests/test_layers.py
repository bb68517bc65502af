"""The architecture, checked from the source: who may import whom, and how large a module may grow."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 500


def _imports(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports, at any depth (relative imports resolved)."""
    package = ".".join(("rdistill", *path.relative_to(ROOT / "rdistill").parent.parts)) if "rdistill" in path.parts else ""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    return names


def _sources(folder: str) -> list[Path]:
    return sorted((ROOT / folder).rglob("*.py"))


def test_the_library_never_imports_the_cli():
    for path in _sources("rdistill"):
        if path.name == "__main__.py":  # `python -m rdistill` is the command line's entry point, not library
            continue
        bad = {n for n in _imports(path) if n.startswith("rdistill.cli")}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_kernels_import_nothing_of_ours():
    for path in _sources("kernels"):
        bad = {n for n in _imports(path) if n.split(".")[0] == "rdistill" or n.startswith(("cli", "benchmarks"))}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_only_the_synthetic_package_imports_the_synthetic_teacher():
    for path in _sources("rdistill"):
        if "synthetic" in path.relative_to(ROOT / "rdistill").parts:
            continue
        bad = {n for n in _imports(path) if n.startswith("rdistill.synthetic")}
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}; reach the teacher through rdistill.data.sources"


@pytest.mark.parametrize("folder", ["rdistill", "cli"])
def test_no_module_is_over_500_lines(folder):
    long = {str(p.relative_to(ROOT)): n for p in _sources(folder) if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these modules by responsibility: {long}"
