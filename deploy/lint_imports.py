"""Check the import contracts of pyproject.toml ([tool.importlinter]) over all of qai.

import-linter (through grimp) analyses packages only, and qai has top-level single-file modules
(`worker.py`, `starter.py`, `submission.py`, `localstack.py`, `contract.py`). So this copies each
of them into a scratch directory as a package of the same name (`worker/__init__.py`), puts that
directory first on the import path and the project second, and runs lint-imports: the graph holds
every module under its own name, and the contracts see the top-level files' imports too.

    .venv/bin/python deploy/lint_imports.py [--root DIR]

Exits 0 when every contract is kept, 1 when one is broken (it prints which import breaks it).
`--root` checks another copy of the project (the tests break one on purpose).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="the project to check")
    root = parser.parse_args(argv).root.resolve()
    from importlinter.cli import lint_imports

    with tempfile.TemporaryDirectory(prefix="qai-lint-imports-") as scratch:
        for module in sorted(root.glob("*.py")):
            package = Path(scratch) / module.stem
            package.mkdir()
            shutil.copyfile(module, package / "__init__.py")
        # lint-imports puts its working directory first on sys.path: the scratch copies win.
        sys.path[:1] = [scratch, str(root)]
        os.chdir(scratch)
        return lint_imports(config_filename=str(root / "pyproject.toml"), no_cache=True)


if __name__ == "__main__":
    sys.exit(main())
