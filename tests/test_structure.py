"""The layout docs/design.md's "How it is built" describes is the layout there is."""

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "yoco_deploy"
LEAF = PACKAGE / "runtime"  # packed into runner.pyz for devices without torch


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py")


def test_no_module_over_400_lines():
    long = {
        str(p.relative_to(PACKAGE)): n
        for p in _modules()
        if (n := len(p.read_text().splitlines())) > 400
    }
    assert long == {}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.module or "" if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }


def test_the_onnx_runtime_leaf_imports_nothing_above_it():
    """yoco_deploy.runtime runs where only numpy and onnxruntime are installed."""
    allowed = sys.stdlib_module_names | {"numpy", "onnxruntime"}
    for path in sorted(LEAF.glob("*.py")):
        for name in _imports(path):
            inside = name == "yoco_deploy.runtime" or name.startswith("yoco_deploy.runtime.")
            assert inside or name.split(".")[0] in allowed, f"{path.name} imports {name}"


def test_the_onnx_runtime_leaf_loads_alone():
    """Every name of the leaf resolves, and importing them loads no other part of the
    package, nor torch or transformers (a fresh interpreter, so nothing is cached)."""
    probe = (
        "import sys; from yoco_deploy import runtime; "
        "[getattr(runtime, n) for n in runtime.__all__]; "
        "import yoco_deploy.runtime.runner; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'transformers', 'yoco_deploy') and not m.startswith('yoco_deploy.runtime')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['yoco_deploy']"


def test_the_design_map_names_every_module_in_its_folder():
    text = (ROOT / "docs" / "design.md").read_text()
    start = text.index("\n## How it is built\n")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end != -1 else len(text)]
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
        where = "docs/design.md's map"
        assert folder in rows, f"{where} has no row for {folder or 'the top level'}/"
        assert path.stem in rows[folder], f"{where} does not list {path.relative_to(PACKAGE)}"
