"""The layering of README "Architecture", as import-linter's contract in pyproject.toml states it."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytest.importorskip("importlinter.cli")


def test_every_module_imports_only_from_the_layers_below_it():
    # A process of its own: import-linter configures logging, which would silence this one's loggers.
    code = "import sys; from importlinter.cli import lint_imports; sys.exit(lint_imports(no_cache=True, no_logo=True))"
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr


def test_no_netlang_import_hides_inside_a_function():
    """Imports of netlang's own modules sit at the top of a module: one inside a function is how a
    circle between modules would be hidden from the contract."""
    hidden = []
    for path in sorted((ROOT / "netlang").rglob("*.py")):
        if path == ROOT / "netlang" / "__init__.py":
            continue   # `netlang.load` imports the API on use: the package root is imported by every module
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.match(r"\s+(from netlang[\w.]* import|import netlang)", line):
                hidden.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    assert not hidden, "\n".join(hidden)
