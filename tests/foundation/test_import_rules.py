"""The import rules of the house, read from the source with ``ast`` (every import, including those inside
functions and ``TYPE_CHECKING`` blocks): data flows one way, and the arrows never run back up.

- the plumbing package ``candlecast`` imports no stage (extract, ml, dags), not the ``cycle`` that drives them,
  not the read API (``serve``), no dev tool and not the demo;
- the read API (``serve``) reads the marts and nothing else: it imports no stage that writes (extract, ml,
  dags, cycle), and no stage imports it (it is the end of the one-way flow);
- nothing shipped or deployed (candlecast, cycle, extract, ml, dags, serve) imports the dev-only ``tools`` or the
  ``demo``;
- no library module imports a ``cli`` module: only a package's ``__main__`` starts its CLI.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("candlecast", "cycle", "extract", "ml", "dags", "serve", "demo", "tools")


def _module_name(path: Path) -> str:
    return ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts)


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    return _imports_in(path.read_text(encoding="utf-8"), package)


def _imports_in(source: str, package: str) -> Iterator[tuple[int, str]]:
    """(line, absolute module name) of every import in ``source``, a module of ``package``;
    ``from x import y`` yields ``x`` and ``x.y`` (y may be a module)."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                source = f"{base}.{node.module}" if node.module else base
            else:
                source = node.module or ""
            yield node.lineno, source
            for alias in node.names:
                yield node.lineno, f"{source}.{alias.name}"


def _sources(*packages: str) -> list[Path]:
    return sorted(p for pkg in packages for p in (REPO_ROOT / pkg).rglob("*.py"))


def _violations(files: list[Path], forbidden: tuple[str, ...]) -> list[str]:
    return sorted({
        f"{path.relative_to(REPO_ROOT)}:{line} imports {name}"
        for path in files for line, name in _imports(path)
        if name.split(".")[0] in forbidden
    })


def test_the_plumbing_package_imports_no_stage_no_tool_and_not_the_demo() -> None:
    files = _sources("candlecast")
    assert len(files) > 5  # the walk finds the package (a rule over no files would pass for nothing)
    assert _violations(files, ("extract", "ml", "dags", "cycle", "serve", "tools", "demo")) == []


def test_the_read_api_imports_no_writing_stage_and_no_stage_imports_it() -> None:
    files = _sources("serve")
    assert len(files) > 5
    assert _violations(files, ("extract", "ml", "dags", "cycle", "tools", "demo")) == []
    assert _violations(_sources("extract", "ml", "dags", "cycle"), ("serve",)) == []


def test_nothing_shipped_or_deployed_imports_the_dev_tools_or_the_demo() -> None:
    assert _violations(_sources("candlecast", "cycle", "extract", "ml", "dags", "serve"), ("tools", "demo")) == []


def test_only_a_packages_main_imports_a_cli_module() -> None:
    files = [p for p in _sources(*PACKAGES) if p.name not in ("cli.py", "__main__.py")]
    bad = sorted({
        f"{path.relative_to(REPO_ROOT)}:{line} imports {name}"
        for path in files for line, name in _imports(path)
        if name.split(".")[-1] == "cli" and name.split(".")[0] in PACKAGES
    })
    assert bad == []


def test_the_rules_see_imports_inside_functions_and_relative_ones() -> None:
    """The walker itself: a late import in a function body and a relative import are both caught."""
    source = "def f():\n    from ml import cli\n    from .settings import REPO_ROOT\n    import extract.pipeline\n"
    names = {name for _, name in _imports_in(source, "candlecast")}
    assert {"ml.cli", "candlecast.settings", "extract.pipeline"} <= names
