"""Every command in the README and the design notes runs: their own text, in its order,
on a tiny BERT.

The walkthrough takes each command from the bash blocks of README.md, then of
docs/design.md, and runs it in a scratch directory after a few stated substitutions (a
tiny random BERT for MiniLM, tiny data for SST-2, fewer profiled sub-BERTs, a tiny
architecture); then the README's Python blocks. A command added to either without a way
to run it here fails `test_every_readme_command_is_walked`; a `yoco-deploy` command or
option that does not exist fails `test_every_documented_command_and_option_exists` at
once, without the slow walk.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import write_tiny_task

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# Run by CI and `make demo` themselves, not from inside the test suite.
NOT_HERE = {
    "make demo",
    "make test",
    # needs optimum's own environment (transformers < 4.58): tests/test_optimum.py runs it
    'python examples/optimum_pipeline.py bundles/<bundle> "a gripping, funny film" "a dull mess"',
    # the quickstart again on the demo's folder (minutes); tests/test_pipeline.py ships an
    # edge and a server target the same way, on a tiny model
    'yoco-deploy quickstart --out demo-out -t "this-machine:latency=55%" '
    '-t "this-machine:latency=60%@batch=16,seq=128,p=99"',
    # a server until Ctrl-C, and a request to it: tests/test_serve.py starts one on a
    # shipped bundle, sends it requests and stops it
    "yoco-deploy serve bundles/<bundle> --port 8000",
    """curl -d '{"text": "a gripping, funny film"}' http://127.0.0.1:8000/""",
}

MINILM_ARCH = json.dumps(
    {"layers": [{"heads": 8, "ffn": 768}, {"heads": 4, "ffn": 1536}, {"heads": 12, "ffn": 384}]}
)
TINY_ARCH = json.dumps(
    {"layers": [{"heads": 4, "ffn": 48}, {"heads": 2, "ffn": 96}, {"heads": 6, "ffn": 24}]}
)


# walked in this order: the README's tour, then the design notes' further commands
WALKED = ("README.md", "docs/design.md")


def bash_commands(path: Path) -> list[str]:
    """Commands of a Markdown file's bash blocks: continuations joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", path.read_text(), re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = re.sub(r"\s{2,}#.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(re.sub(r"\s+", " ", line))
    return commands


def readme_commands() -> list[str]:
    """The walked commands: README.md's bash blocks, then docs/design.md's."""
    return [c for name in WALKED for c in bash_commands(ROOT / name)]


def readme_python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def substitutions(work: Path, model: Path, data: Path) -> list[tuple[str, str]]:
    return [
        ("--model minilm", f"--model {model}"),
        ("../shared/data/glue/SST-2", str(data)),
        ("--n 150", "--n 12"),
        ("--max-train 20000 --max-seq-len 64 --epochs 1", "--max-seq-len 16 --epochs 1"),
        ("configs/sst2-minilm-cpu.yaml", str(work / "train-tiny.yaml")),
        ("configs/pipeline-sst2-minilm.yaml", str(work / "pipeline-tiny.yaml")),
        # a tiny random BERT is at chance: an explicit floor lets the walk ship through the
        # quality gate (which has its own tests)
        ("--calibrate --bundles bundles/", "--calibrate --bundles bundles/ --min-metric 0"),
        ("latency=6ms --arch arch.json", "latency=6ms --arch arch.json --min-metric 0"),
        ("x86-2c-ort-cpu-minilm", "my-laptop"),  # the predictor fitted earlier in the walk
        ("--evaluations 100", "--evaluations 20"),
        (MINILM_ARCH, TINY_ARCH),
        ("[--calibrate]", "--calibrate"),
        ("evaluations=100", "evaluations=20"),
        ('ShipSettings.from_options("int8"', 'ShipSettings.from_options("int8", min_metric=0.0'),
    ]


def tiny_command(command: str, work: Path, model: Path, data: Path) -> str:
    for old, new in substitutions(work, model, data):
        command = command.replace(old, new)
    if "<bundle>" in command:
        bundle = next(p.parent for p in (work / "bundles").glob("*/manifest.json"))
        command = command.replace("bundles/<bundle>", str(bundle))
    return command


def prepare(work: Path, model: Path, data: Path) -> None:
    """The files the README assumes the user has written."""
    import yaml

    train = yaml.safe_load((ROOT / "configs/tiny.yaml").read_text())
    train.update(
        model="runs/sst2-minilm-teacher/final",
        teacher="runs/sst2-minilm-teacher/final",
        data_dir=str(data),
        output_dir="runs/sst2-minilm-super",
    )
    (work / "train-tiny.yaml").write_text(yaml.safe_dump(train))
    pipeline = yaml.safe_load((ROOT / "configs/pipeline-tiny.yaml").read_text())
    pipeline.update(model=str(model), data_dir=str(data), workdir=str(work / "pipeline"))
    (work / "pipeline-tiny.yaml").write_text(yaml.safe_dump(pipeline))
    (work / "my_space.yaml").write_text("heads: [2, 6]\nffn: [48, 96]\n")


def run(command: str, work: Path) -> subprocess.CompletedProcess:
    argv = shlex.split(command)
    if argv[0] == "echo":  # the README's `echo ... > arch.json`
        (work / argv[-1]).write_text(argv[1] + "\n")
        return subprocess.CompletedProcess(argv, 0, "", "")
    if argv[0] == "yoco-deploy":
        argv[0] = str(BIN / "yoco-deploy")
    elif argv[0] == "python":
        argv[0] = sys.executable
        if argv[1].startswith("examples/"):
            argv[1] = str(ROOT / argv[1])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=600)


def test_every_readme_command_is_walked(tmp_path):
    commands = readme_commands()
    assert len(commands) > 15 and "yoco-deploy export" in " ".join(commands)
    model, data = tmp_path / "m", tmp_path / "d"
    for command in commands:
        if command in NOT_HERE:
            continue
        first = shlex.split(command)[0]
        assert first in {"yoco-deploy", "python", "echo"}, f"README command not walked: {command}"
        tiny = tiny_command(command, tmp_path, model, data) if "<bundle>" not in command else ""
        assert "minilm" not in tiny.replace("sst2-minilm", ""), f"no tiny stand-in: {command}"
        assert "../shared" not in tiny


def documented_commands() -> list[str]:
    """Every bash command of the user-facing docs that calls the CLI."""
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return [c for f in files for c in bash_commands(f) if c.startswith("yoco-deploy ")]


def test_every_documented_command_and_option_exists():
    import click
    import typer

    from yoco_deploy.cli.main import app

    group = typer.main.get_command(app)
    ctx = click.Context(group)
    commands = documented_commands()
    assert len(commands) > 15
    for command in commands:
        argv = shlex.split(command)
        sub = group.get_command(ctx, argv[1])
        assert sub is not None, f"no command {argv[1]!r}: {command}"
        options = {name for p in sub.params for name in (*p.opts, *p.secondary_opts)}
        for word in argv[2:]:
            if word.startswith("-") and not re.fullmatch(r"-[\d.]+", word):
                name = word.split("=")[0]
                assert name in options, f"yoco-deploy {argv[1]} has no option {name}: {command}"


def test_the_readme_python_blocks_are_walked():
    blocks = readme_python_blocks()
    assert len(blocks) >= 3 and any("load_bundle" in b for b in blocks)
    for block in blocks:  # each runs on the tiny BERT: MiniLM named only where substituted
        text = block.replace('"minilm"', "")
        for old, new in substitutions(Path("w"), Path("m"), Path("d")):
            text = text.replace(old, new)
        assert "minilm" not in text.replace("runs/sst2-minilm-super", ""), block  # walk's train


def test_substitutions_only_shrink_the_run():
    text = " ".join([*readme_commands(), *readme_python_blocks()])
    for old, _ in substitutions(Path("w"), Path("m"), Path("d")):
        assert old in text, f"stale substitution {old!r}: the README no longer says it"


@pytest.mark.slow
def test_readme_walkthrough(tmp_path):
    model, data = write_tiny_task(tmp_path / "assets")
    work = tmp_path / "work"
    work.mkdir()
    prepare(work, model, data)
    for command in readme_commands():
        if command in NOT_HERE:
            continue
        tiny = tiny_command(command, work, model, data)
        done = run(tiny, work)
        assert done.returncode == 0, f"{command}\n-> {tiny}\n{done.stderr[-3000:]}"
    for block in readme_python_blocks():  # after the commands: they wrote out/ and bundles/
        code = tiny_command(block.replace('"minilm"', f'"{model}"'), work, model, data)
        (work / "block.py").write_text(code)
        done = run("python block.py", work)
        assert done.returncode == 0, f"{block}\n{done.stderr[-3000:]}"
        if "load_bundle" in block:  # each line: a class name of the task, and its score
            lines = [line.split() for line in done.stdout.splitlines()]
            assert len(lines) == 2 and all(name in {"negative", "positive"} for name, _ in lines)
            assert all(0.5 <= float(score) <= 1 for _, score in lines)
    manifests = [json.loads(p.read_text()) for p in (work / "bundles").glob("*/manifest.json")]
    assert manifests and all(
        m["measured_latency_ms"]["median"] <= m["budgets"]["latency"] for m in manifests
    )
