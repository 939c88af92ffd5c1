"""The architecture is a contract: the import-linter contracts in ``pyproject.toml`` hold for the
tree, and they would catch the two ways a layout decays — a lower package importing the service
that composes it, and an import circle. Both are proved by breaking a copy of the tree."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("adapter", "ehr", "mappings", "portal_links", "whatsapp")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """Runs ``lint-imports`` with ``root`` first on the import path, so it graphs that tree."""
    script = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
    return subprocess.run([sys.executable, "-c", script, "--config", str(root / "pyproject.toml"), "--no-cache"],
                          cwd=root, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def tree_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tree")
    for package in PACKAGES:
        shutil.copytree(ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__", "*.json"))
    shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def add_import(module: Path, statement: str) -> str:
    original = module.read_text(encoding="utf-8")
    module.write_text(original + f"\n{statement}  # added by the architecture test\n", encoding="utf-8")
    return original


def test_the_tree_keeps_every_contract() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(("module", "statement", "broken", "named"), [
    # A lower package reaching up into the service that composes it.
    ("portal_links/tokens.py", "import adapter.storage.db", "The service composes the parts",
     "portal_links.tokens -> adapter.storage.db"),
    ("ehr/client.py", "import adapter.app", "The service composes the parts", "ehr.client -> adapter.app"),
    # A capability reaching up into one that depends on it (which is also a circle between packages).
    ("adapter/outbox/dispatch.py", "import adapter.conversation.chat", "capabilities depend downwards",
     "adapter.outbox.dispatch -> adapter.conversation.chat"),
    # A circle between two modules of one package.
    ("mappings/policy.py", "import mappings.render", "No import circles", ".policy -> .render"),
])
def test_a_broken_layer_or_circle_fails_the_check(tree_copy: Path, module: str, statement: str,
                                                  broken: str, named: str) -> None:
    path = tree_copy / module
    original = add_import(path, statement)
    try:
        result = lint_imports(tree_copy)
    finally:
        path.write_text(original, encoding="utf-8")
    assert result.returncode == 1, result.stdout
    assert f"{broken}" in result.stdout.split("Broken contracts")[-1]
    assert named in result.stdout
