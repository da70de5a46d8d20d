"""The layout the README's "How it is built" describes is the layout there is."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "yoco_deploy"
RUNNER = PACKAGE / "device" / "runner.py"  # copied as one file to devices without torch


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")


def test_no_module_over_400_lines_but_the_device_runner():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in _modules()
        if p != RUNNER and (n := len(p.read_text().splitlines())) > 400
    }
    assert long == {}


def test_the_device_runner_stands_alone():
    """It runs where only numpy and onnxruntime are installed: nothing of the package."""
    tree = ast.parse(RUNNER.read_text())
    imported = {
        (node.module or "").split(".")[0] if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert "yoco_deploy" not in imported and not imported & {"torch", "transformers"}


def test_the_readme_map_names_every_module_in_its_folder():
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## How it is built") : text.index("## How it stays exact")]
    rows = {}
    for line in section.splitlines():
        m = re.match(r"\| `yoco_deploy/`.*?\| (.*) \|$", line) or re.match(
            r"\| `(\w+)/` \| (.*) \|$", line
        )
        if m:
            folder = "" if line.startswith("| `yoco_deploy/`") else m.group(1)
            named = set(re.findall(r"`(\w+)`", m.groups()[-1]))
            rows[folder] = named
    for path in _modules():
        folder = "" if path.parent == PACKAGE else path.parent.name
        assert folder in rows, f"README's map has no row for {folder or 'the top level'}/"
        assert path.stem in rows[folder], f"README's map does not list {path.relative_to(PACKAGE)}"
