import json
import os

import pytest

from yoco_deploy.cli.main import app

from helpers import assert_one_line_error, run

ARCH = '{"layers": [{"heads": 2, "ffn": 24}, {"heads": 6, "ffn": 96}, {"heads": 4, "ffn": 48}]}'


def test_help_lists_commands():
    result = run("--help")
    assert result.exit_code == 0
    for command in ("space", "costs", "export", "quickstart"):
        assert command in result.output


def test_no_option_is_spelled_twice_in_one_command():
    """Two parameters behind one flag: click gives it to one, the other is unreachable."""
    import typer

    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        flags = [f for p in command.params for f in (*p.opts, *p.secondary_opts)]
        assert len(flags) == len(set(flags)), (name, sorted(f for f in flags if flags.count(f) > 1))


def test_search_infeasible_is_one_choice(tmp_path):
    result = run("search", "--supernet", tmp_path, "-t", "a:params=1M", "--infeasible", "foo")
    assert_one_line_error(result, "unknown --infeasible 'foo'; choose from repair, skip, penalize")


def test_space_json(tiny_dir):
    result = run("space", "--model", tiny_dir, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["depth"] == [2, 3, 4] and data["heads"] == [2, 4, 6]
    assert data["ffn"] == [24, 48, 72, 96] and data["size"] == 12**2 + 12**3 + 12**4


def test_space_table(tiny_dir):
    result = run("space", "--model", tiny_dir)
    assert result.exit_code == 0 and "architectures" in result.output


def test_costs_json(tiny_dir, tmp_path):
    path = tmp_path / "a.json"
    path.write_text(ARCH)
    result = run("costs", "--model", tiny_dir, "--arch", path, "--seq-len", 64, "--batch", 2)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["seq_len"] == 64 and data["batch"] == 2 and data["params"] > 0
    assert data["arch"] == json.loads(ARCH)


def test_export_end_to_end(tiny_dir, tmp_path):
    out = tmp_path / "out"
    result = run(
        "export", "-m", tiny_dir, "--arch", ARCH, "--out", out, "--optimize", "--quantize", "int8"
    )
    assert result.exit_code == 0, result.output
    report = json.loads((out / "export.json").read_text())
    assert report["fused_operators"]["Attention"] == 3
    assert (out / "model.int8.onnx").is_file() and (out / "model" / "config.json").is_file()


def test_export_json_is_the_report(tiny_dir, tmp_path):
    out = tmp_path / "out"
    result = run("export", "-m", tiny_dir, "--arch", ARCH, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)  # stdout is the JSON alone; notes go to stderr
    assert printed == json.loads((out / "export.json").read_text())


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["costs", "--model", "{tmp}/missing", "--arch", ARCH], "does not exist"),
        (["costs", "--model", "{tiny}", "--arch", "{tmp}/nope.json"], "cannot read architecture"),
        (["costs", "--model", "{tiny}", "--arch", "{bad}"], "not valid JSON"),
        (
            ["costs", "--model", "{tiny}", "--arch", '{"layers": [{"heads": 5, "ffn": 24}]}'],
            "heads 5 not in [2, 4, 6]",
        ),
        (["space", "--model", "{tiny}", "--space", "{bad}"], "not valid"),
        (["export", "--model", "{tiny}", "--arch", ARCH, "--out", "{ro}/x"], "cannot write"),
        (
            ["export", "-m", "{tiny}", "--arch", ARCH, "--out", "{tmp}/o", "--num-labels", "5"],
            "classifier head of another size than the 5 classes",
        ),
        (
            [
                "export",
                "--model",
                "{tiny}",
                "--arch",
                ARCH,
                "--out",
                "{tmp}/o",
                "--quantize",
                "int4",
            ],
            "unknown quantization",
        ),
        (["space", "--model", "no-such-org/no-such-model"], "cannot load model"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(args, fragment, tiny_dir, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    if os.geteuid() == 0 and "{ro}" in " ".join(args):
        ro = tmp_path / "file-not-dir"  # root ignores permissions: use a file as parent
        ro.write_text("")
    subs = {"{tmp}": str(tmp_path), "{tiny}": str(tiny_dir), "{bad}": str(bad), "{ro}": str(ro)}
    filled = []
    for a in args:
        for key, value in subs.items():
            a = a.replace(key, value)
        filled.append(a)
    assert_one_line_error(run(*filled), fragment)
