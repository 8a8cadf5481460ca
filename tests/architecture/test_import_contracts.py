"""The import contracts of pyproject.toml hold, and a copy of qai that breaks them fails the check.

The check is deploy/lint_imports.py (import-linter over every module, the top-level files
included); `make test` runs it too, and these tests make a broken contract fail pytest itself.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHECK = ROOT / "deploy" / "lint_imports.py"


def lint(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(CHECK), "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def python_copy(destination: Path) -> None:
    """The project's Python modules and pyproject.toml (no assets, caches or tests)."""
    destination.mkdir()
    shutil.copy(ROOT / "pyproject.toml", destination)
    for path in ROOT.iterdir():
        if path.suffix == ".py":
            shutil.copy(path, destination)
        elif (path / "__init__.py").is_file() or path.name == "api":

            def ignore(directory: str, names: list[str]) -> list[str]:
                here = Path(directory)
                return [n for n in names if not (n.endswith(".py") or (here / n).is_dir())]

            shutil.copytree(path, destination / path.name, ignore=ignore)


def append(path: Path, line: str) -> None:
    path.write_text(path.read_text() + f"\n{line}\n")


def test_the_project_keeps_its_import_contracts() -> None:
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_layer_violation_an_activity_importing_a_workflow_and_a_cycle_fail(
    tmp_path: Path,
) -> None:
    copy = tmp_path / "qai"
    python_copy(copy)
    assert lint(copy).returncode == 0  # the copy alone is whole

    append(copy / "runtime" / "logs.py", "import storage.db  # noqa")  # the lowest layer reaches up
    append(copy / "activities" / "checks.py", "import workflows.project  # noqa")
    append(copy / "sandboxes" / "local" / "layout.py", "from sandboxes.local import supervisor")
    result = lint(copy)

    assert result.returncode == 1, result.stdout + result.stderr
    out = " ".join(result.stdout.split())  # the report wraps long lines
    assert "0 kept" not in out
    assert "Layers, top to bottom (the parts of one layer are independent) BROKEN" in out
    assert "runtime.logs -> storage.db" in out
    assert "Activities never import workflows BROKEN" in out
    assert "activities.checks -> workflows.project" in out
    assert "No import cycles between the modules of any package BROKEN" in out
    assert "No cycles are allowed in sandboxes.local" in out
