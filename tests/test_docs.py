"""The user-facing docs: a README a new user reads in five minutes, a command reference
generated from the app, benchmarks each with its command, current facts only (no run
histories, commit hashes or dates), and links that lead somewhere."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BENCH = ROOT / "bench" / "README.md"
CLI_DOCS = ROOT / "docs" / "cli.md"


def user_docs() -> list[Path]:
    return [README, *sorted((ROOT / "docs").glob("*.md")), BENCH]


def test_the_readme_is_a_short_guide_that_starts_with_the_set_up():
    text = README.read_text()
    assert len(text.splitlines()) <= 300, "README.md is a user's guide: at most 300 lines"
    first = re.search(r"```bash\n(.*?)```", text, re.S).group(1).splitlines()
    assert first[0].startswith("make demo") and first[1].startswith("make test")
    for section in ("## Set-up", "## A five-minute tour", "## Concepts", "## Commands"):
        assert section in text
    assert "## Python API" in text and "## Limits" in text


# Accounts of what was done when: session words, commit hashes, dates, numbered runs.
HISTORY = [
    re.compile(r"\b(?:this|previous|last|earlier|prior|former) sessions?\b", re.I),
    re.compile(r"\bin session\b", re.I),
    re.compile(r"\bcommit(?:ted)?\s+(?:as\s+)?`?[0-9a-f]{7,40}\b", re.I),
    re.compile(r"\b20\d\d-\d\d-\d\d\b"),
    re.compile(r"\b(?:run|attempt) #?\d+\b(?![.,%\d-])", re.I),
]
# A bare git hash: 7-40 hex characters with a digit and a letter. Arch ids, which the
# docs quote as examples, are exactly 10 characters and are allowed.
HEX = re.compile(r"(?<![\w./-])(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,40}(?![\w-])")


def history_in(line: str) -> list[str]:
    found = [m.group(0) for pattern in HISTORY for m in pattern.finditer(line)]
    return found + [m.group(0) for m in HEX.finditer(line) if len(m.group(0)) != 10]


def test_the_history_check_tells_history_from_fact():
    for narrative in (
        "In the previous session the same check gave 8/9.",
        "this session's run",
        "timing ship on real text (commit 5473175, reverted)",
        "reverted in `a54f731`",
        "measured on 2026-12-01",
        "run 3 was stopped",
    ):
        assert history_in(narrative), narrative
    for fact in (
        "an ONNX Runtime InferenceSession with the manifest's session settings",
        "times the reference in sessions built as the profile's were",
        "spinning threads steal the cores of the next session in the same process",
        "the session its manifest records",
        "L6 `d6a456506b` (2.85 ms)",
        "bundles/x86-2c-ort-cpu-minilm@5.1ms_accuracy@0.874_3efb0cd8ce/",
        "7 rounds x 300 runs, 10 seeds, 1686 steps, 9193 evaluations",
        "the profiles committed in `profiles/`",
        "the L4 bundles run 3.5-7.5% slower; a round times 5 runs",
    ):
        assert not history_in(fact), fact


def test_no_run_history_in_the_docs():
    for path in user_docs():
        for n, line in enumerate(path.read_text().splitlines(), 1):
            found = history_in(line)
            assert not found, (
                f"{path.relative_to(ROOT)}:{n} reads as history ({found}): state current "
                "facts and latest figures; git keeps the history"
            )


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)  # not a bash comment
    headings = re.findall(r"^#+ (.*)$", text, re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_every_link_between_the_docs_leads_somewhere():
    checked = 0
    for path in user_docs():
        text = re.sub(r"```.*?```", "", path.read_text(), flags=re.S)
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            where = f"{path.relative_to(ROOT)} links to {target}"
            assert dest.exists(), f"{where}: no such file"
            if anchor and dest.suffix == ".md":
                assert anchor in _anchors(dest), f"{where}: no such heading"
            checked += 1
    assert checked > 20


def _cli_docs_command() -> list[str]:
    """The generator's arguments, read from the Makefile's `docs` target (one source)."""
    m = re.search(r"^CLI_DOCS := (.*)$", (ROOT / "Makefile").read_text(), re.M)
    assert m, "the Makefile defines CLI_DOCS for `make docs`"
    return [sys.executable, *shlex.split(m.group(1))]


def test_the_cli_reference_is_generated_from_the_app_and_current(tmp_path):
    out = tmp_path / "cli.md"
    subprocess.run(
        [*_cli_docs_command(), "--output", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    )
    fresh = out.read_text()
    assert "## `yoco-deploy quickstart`" in fresh
    assert CLI_DOCS.read_text() == fresh, "docs/cli.md is out of date: run `make docs`"


def test_the_readme_command_table_lists_every_command():
    import typer

    from yoco_deploy.cli.main import app

    group = typer.main.get_command(app)
    commands = set(group.commands)
    text = README.read_text()
    section = text[text.index("## Commands") : text.index("\n## ", text.index("## Commands"))]
    listed = set(re.findall(r"^\| `yoco-deploy ([\w-]+)` \|", section, re.M))
    missing, extra = commands - listed, listed - commands
    assert not missing and not extra, f"README's command table: missing {missing}, extra {extra}"


def test_every_benchmark_has_its_command_and_figures_in_bench_readme():
    text = BENCH.read_text()
    scripts = sorted(  # the benchmarks and tools, not their shared helpers (_common.py)
        p.name
        for p in (ROOT / "bench").iterdir()
        if p.suffix in {".py", ".sh"} and not p.name.startswith("_")
    )
    assert scripts
    for name in scripts:
        assert f"bench/{name}" in text, f"bench/README.md does not name bench/{name}"
    targets = re.findall(r"^(bench-[\w-]+):", (ROOT / "Makefile").read_text(), re.M)
    for target in targets:
        assert f"make {target}" in text, f"bench/README.md does not give `make {target}`"
    sections = re.split(r"^## ", text, flags=re.M)[1:]
    assert len(sections) >= 10
    for section in sections:
        title = section.splitlines()[0]
        assert "```bash\n" in section, f"bench/README.md's {title!r} gives no command"
        assert re.search(r"^\|.*\d.*\|$", section, re.M) or "no GPU result yet" in section, (
            f"bench/README.md's {title!r} gives no figures"
        )
    assert "## Benchmarks" not in README.read_text(), "figures belong in bench/README.md"
