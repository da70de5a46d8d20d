"""Bad input, as a demanding user gives it: each case ends with one `error:` line and a
non-zero exit, and nothing is written outside the named folders or left half-written."""

import pytest

from yoco_deploy.deploy.budgets import Target, parse_target
from yoco_deploy.names import UnsafeNameError, check_name, slug

UNSAFE = ["../victim", "a/b", "..", ".hidden", "", "x" * 101, "a b", "c:\\\\d", "ok/../../x"]


@pytest.mark.parametrize("name", UNSAFE)
def test_unsafe_names_are_refused(name):
    with pytest.raises(UnsafeNameError, match="is not a plain name"):
        check_name(name, "device name")


@pytest.mark.parametrize("text", ["../../victim:params=1M", "a/b:latency=2ms", "..:flops=1G"])
def test_a_target_naming_a_path_is_refused_at_parse_time(text):
    with pytest.raises(UnsafeNameError):
        parse_target(text)
    with pytest.raises(UnsafeNameError):
        Target(text.split(":")[0], {"params": 1e6})


def test_one_folder_name_per_target():
    target = parse_target("this-machine:latency=55%,params=20M")
    assert target.slug() == slug(target.label()) == "this-machine_latency_share-55pct_params-20M"
    assert "/" not in target.slug() and ".." not in target.slug()
    assert check_name("x86-2c-ort-cpu-minilm") == "x86-2c-ort-cpu-minilm"


def test_cli_refuses_a_device_path(tmp_path):
    from helpers import run

    result = run(
        "profile", "--model", "minilm", "--device", "../../x",
        "--profiles-dir", tmp_path / "profiles", "--n", 10,
    )  # fmt: skip
    assert result.exit_code != 0
    assert "is not a plain name" in result.output
    assert not (tmp_path / "x").exists() and not (tmp_path.parent / "x").exists()


def test_a_budget_given_twice_is_an_error():
    from yoco_deploy.deploy.budgets import BudgetError

    for text in ("d:latency=1ms,latency=2ms", "d:latency=50%,latency=2ms", "d:params=1M,params=2M"):
        with pytest.raises(BudgetError, match="given twice"):
            parse_target(text)


def test_a_sequence_longer_than_the_positions_is_one_clear_error(tmp_path):
    from helpers import TINY, run

    arch = '{"layers": [{"heads": 2, "ffn": 24}, {"heads": 2, "ffn": 24}]}'
    model = tmp_path / "tiny"
    __import__("helpers").tiny_bert().save_pretrained(model)
    result = run("costs", "--model", model, "--arch", arch, "--seq-len", 500)
    assert result.exit_code == 1
    assert f"has {TINY['max_position_embeddings']} position embeddings" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_debug_environment_variable_keeps_the_traceback(tmp_path, monkeypatch):
    from helpers import run

    monkeypatch.setenv("YOCO_DEBUG", "1")
    result = run("costs", "--model", tmp_path / "missing", "--arch", "{}")
    assert result.exit_code != 0 and result.exception is not None


def test_an_output_folder_under_a_file_is_one_line(tmp_path):
    from helpers import run

    model = tmp_path / "tiny"
    __import__("helpers").tiny_bert().save_pretrained(model)
    (tmp_path / "a-file").write_text("x")
    arch = '{"layers": [{"heads": 2, "ffn": 24}, {"heads": 2, "ffn": 24}]}'
    result = run("export", "--model", model, "--arch", arch, "--out", tmp_path / "a-file" / "out")
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output


def _one_error_line(result) -> str:
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1, result.output
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    return lines[0]


def test_search_refuses_a_target_that_names_a_path(tmp_path):
    from helpers import run

    result = run(
        "search", "--supernet", tmp_path / "none", "--task", "sst2",
        "-t", "../../../x:params=1M", "--out", tmp_path / "A" / "b",
        "--bundles", tmp_path / "A" / "bb",
    )  # fmt: skip
    assert "is not a plain name" in _one_error_line(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_ship_from_a_malformed_search_result_is_one_line(tmp_path):
    from yoco_deploy.cli.deploy import ranked_archs
    from yoco_deploy.errors import YocoError

    bad = tmp_path / "result.json"
    for text in ("{not json", '{"ranked": [{"arch": 3}]}', "[]", '{"ranked": []}'):
        bad.write_text(text)
        with pytest.raises(YocoError, match=r"result\.json"):
            ranked_archs(bad)


def test_an_extracted_sub_bert_as_model_says_what_it_is(tmp_path):
    from yoco_deploy.model.extract import extract, save_extracted
    from yoco_deploy.model.super_bert import SuperBert

    from helpers import run

    sb = SuperBert(__import__("helpers").tiny_bert())
    save_extracted(extract(sb, sb.space.min_arch()), tmp_path / "sub")
    result = run("space", "--model", tmp_path / "sub")
    assert "is an extracted sub-BERT" in _one_error_line(result)


def test_profile_with_a_sequence_longer_than_the_positions_writes_nothing(tmp_path):
    from helpers import run

    model = tmp_path / "tiny"
    __import__("helpers").tiny_bert().save_pretrained(model)
    result = run(
        "profile", "--model", model, "--device", "dev", "--seq-len", 500,
        "--profiles-dir", tmp_path / "profiles", "--n", 10,
    )  # fmt: skip
    assert "position embeddings" in _one_error_line(result)
    assert not (tmp_path / "profiles" / "dev").exists()


def test_glue_rows_missing_a_column_are_counted(tmp_path, capsys):
    from yoco_deploy.train.data import get_task, read_glue_tsv

    path = tmp_path / "train.tsv"
    path.write_text("sentence\tlabel\na fine film\t1\nbroken row\nanother\t0\n")
    examples = read_glue_tsv(path, get_task("sst2"))
    assert len(examples) == 2
    assert "skipped 1 of 3 rows" in capsys.readouterr().err


def test_a_failed_cleanup_does_not_hide_the_error_that_caused_it(tmp_path, monkeypatch):
    """The folder turns read-only mid-export: the export's own error reaches the user,
    not the PermissionError of removing its temporary file."""
    from pathlib import Path

    from yoco_deploy.errors import ExportError
    from yoco_deploy.export import sub_bert as export_module
    from yoco_deploy.model.super_bert import SuperBert

    def read_only_unlink(self, missing_ok=False):
        raise PermissionError(13, "Permission denied", str(self))

    def failing_export(model, path, spec):
        Path(path).write_bytes(b"partial")
        monkeypatch.setattr(Path, "unlink", read_only_unlink)  # the folder turns read-only
        raise ExportError("exported ONNX model does not match PyTorch")

    monkeypatch.setattr(export_module, "export_onnx", failing_export)
    sb = SuperBert(__import__("helpers").tiny_bert())
    with pytest.raises(ExportError, match="does not match PyTorch"):
        export_module.export_sub_bert(sb, sb.space.min_arch(), tmp_path / "out", seq_len=8)


@pytest.mark.parametrize("threads", ["100000", "0"])
def test_an_absurd_thread_count_is_refused_before_any_session(tmp_path, threads):
    """--threads 100000 once made ONNX Runtime allocate 17 GB for its thread pool."""
    from helpers import run

    model = tmp_path / "tiny"
    __import__("helpers").tiny_bert().save_pretrained(model)
    result = run(
        "profile", "--model", model, "--device", "dev", "--threads", threads,
        "--profiles-dir", tmp_path / "profiles", "--n", 2,
    )  # fmt: skip
    assert result.exit_code != 0
    if threads != "0":  # 0 is refused by the option's own range check
        assert "threads" in _one_error_line(result)
    assert not (tmp_path / "profiles").exists()


@pytest.mark.parametrize(
    "args",
    [["costs", "--model", "minilm", "--arch", "x", "--seq-len", "0"], ["baseline"],
     ["space", "--frobnicate"], ["ship", "--batch", "0"]],
)  # fmt: skip
def test_usage_mistakes_are_one_error_line_too(args):
    """Out-of-range values, unknown options and commands: one `error:` line naming the
    help to read, exit 2; not click's boxed panel."""
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", "import sys; from yoco_deploy.cli import main; sys.exit(main())",
         *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--help" in lines[0], lines


def test_profile_import_of_files_that_are_not_records_is_one_line(tmp_path):
    from helpers import run

    bundle = tmp_path / "b"
    (bundle / "results").mkdir(parents=True)
    (bundle / "plan.json").write_text("[]")
    (bundle / "results" / "device.json").write_text("[]")
    result = run("profile-import", bundle, "--device", "d", "--profiles-dir", tmp_path / "p")
    assert "is not what profile-bundle and runner.pyz write" in _one_error_line(result)
    assert not (tmp_path / "p").exists()


def test_a_negative_learning_rate_is_one_line(tmp_path):
    from helpers import run

    model_dir, data_dir = __import__("helpers").write_tiny_task(tmp_path, 20, 10)
    result = run(
        "finetune", "--model", model_dir, "--task", "sst2", "--data-dir", data_dir,
        "--out", tmp_path / "ft", "--lr", "-1",
    )  # fmt: skip
    assert "lr" in _one_error_line(result)
    assert not (tmp_path / "ft").exists()


@pytest.mark.parametrize(
    "extra, message",
    [(["--until", "within10=1.5"], "can never be met"),
     (["--near", "3"], "add --until"),
     (["--until", "within10=0.9", "--near", "-3"], "positive milliseconds"),
     (["--exclude-profile", "nothere"], "not a profile directory")],
)  # fmt: skip
def test_profile_options_that_could_never_work_are_refused(tmp_path, extra, message):
    from helpers import run

    model = tmp_path / "tiny"
    __import__("helpers").tiny_bert().save_pretrained(model)
    result = run(
        "profile", "--model", model, "--device", "dev", "--n", 2,
        "--profiles-dir", tmp_path / "profiles", *extra,
    )  # fmt: skip
    assert message in _one_error_line(result)
    assert not (tmp_path / "profiles").exists()


def test_an_impossible_quality_floor_is_refused_before_any_work(tmp_path):
    from helpers import run

    model_dir, data_dir = __import__("helpers").write_tiny_task(tmp_path, 20, 10)
    arch = '{"layers": [{"heads": 2, "ffn": 24}]}'
    result = run(
        "ship", "--supernet", model_dir, "--task", "sst2", "--data-dir", data_dir,
        "-t", "d:params=3M", "--arch", arch, "--bundles", tmp_path / "b", "--min-metric", 2,
    )  # fmt: skip
    assert "can never be met" in _one_error_line(result)
    assert not (tmp_path / "b").exists()


def test_export_of_an_arch_outside_the_space_leaves_no_folder(tmp_path):
    from helpers import run

    model = tmp_path / "tiny"
    __import__("helpers").tiny_bert().save_pretrained(model)
    arch = '{"layers": [{"heads": 99, "ffn": 24}]}'
    result = run("export", "--model", model, "--arch", arch, "--out", tmp_path / "out")
    _one_error_line(result)
    assert not (tmp_path / "out").exists()
