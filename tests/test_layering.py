"""app/ (and the migrations, which the API runs) never import workers/: the API's image and its
schema need nothing of the worker package. `lookout worker` and `lookout models` reach
workers/cli.py by name (app/cli/common.py load), like a console-script entry point."""

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
    return names


def test_no_module_of_app_or_the_migrations_imports_workers():
    offenders = [
        f"{path.relative_to(REPO)}: {name}"
        for folder in ("app", "migrations")
        for path in sorted((REPO / folder).rglob("*.py"))
        for name in imported_modules(path)
        if name == "workers" or name.startswith("workers.")
    ]
    assert offenders == []


def test_importing_every_module_of_app_loads_nothing_of_workers():
    script = (
        "import pkgutil, sys, app\n"
        "for info in pkgutil.walk_packages(app.__path__, 'app.'):\n"
        "    if not info.name.endswith('__main__'):\n"
        "        __import__(info.name)\n"
        "loaded = sorted(m for m in sys.modules if m == 'workers' or m.startswith('workers.'))\n"
        "print(len([m for m in sys.modules if m.startswith('app.')]), loaded)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True
    )
    count, loaded = result.stdout.split(" ", 1)
    assert int(count) > 40  # the walk really imported the package
    assert loaded.strip() == "[]"


def test_the_checker_sees_an_import_of_workers(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text("import os\nfrom workers.models import ModelError\nimport workers.pool\n")
    assert imported_modules(sample) == ["os", "workers.models", "workers.pool"]
