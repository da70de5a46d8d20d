import json

import pytest
from transformers import BertConfig

from yoco_deploy import runtime
from yoco_deploy.device.profiling import ProfileSettings, profile_device
from yoco_deploy.space import SearchSpace

from helpers import TINY, FakeBackend, assert_one_line_error, run

FAST = runtime.Protocol(warmup=1, min_runs=3, max_runs=6, chunk=3, ref_every=5)


@pytest.fixture(scope="module")
def profile_dir(tmp_path_factory):
    space = SearchSpace.from_config(BertConfig(**TINY))
    out = tmp_path_factory.mktemp("profiles") / "fake"
    settings = ProfileSettings(n=24, protocol=FAST, session=runtime.SessionSpec(threads=1))
    profile_device(
        space, out, "fake", settings, "tiny", progress=lambda *a: None, backend=FakeBackend()
    )
    return out


def test_fit_then_predict(profile_dir, tmp_path):
    out = tmp_path / "pred.json"
    result = run("fit", "--profile", profile_dir, "--out", out)
    assert result.exit_code == 0, result.output
    assert out.is_file() and out.with_suffix(".png").is_file()
    saved = json.loads(out.read_text())
    assert set(saved["metrics"]["selection"]) == {"linear", "gbrt", "flops"}
    assert saved["device"]["name"] == "fake" and saved["profile"]["rows"] == 24
    assert {"holdout"} <= set(saved["metrics"]) and "sha256" in saved
    arch = '{"layers": [{"heads": 2, "ffn": 24}, {"heads": 6, "ffn": 96}]}'
    result = run("predict", "--predictor", out, "--arch", arch)
    assert result.exit_code == 0, result.output
    pred = json.loads(result.output)
    assert pred["latency_ms"] > 0 and pred["low_ms"] <= pred["latency_ms"] <= pred["high_ms"]
    # the fake device's latency is linear in file size: the predictor should be close
    assert saved["metrics"]["holdout"][saved["model"]["type"]]["mape"] < 0.05
    again = run("fit", "--profile", profile_dir, "--out", tmp_path / "again.json", "--json")
    assert again.exit_code == 0, again.output
    printed = json.loads(again.stdout)
    assert printed["model"] == saved["model"]["type"]
    assert {r["split"] for r in printed["metrics"]} >= {"holdout"}


@pytest.mark.parametrize(
    "args, fragment",
    [
        (
            [
                "profile",
                "-m",
                "{tiny}",
                "--device",
                "x",
                "--format",
                "fp8",
                "--profiles-dir",
                "{tmp}",
            ],
            "unknown --format",
        ),
        (
            [
                "profile",
                "-m",
                "{tiny}",
                "--device",
                "x",
                "--until",
                "accuracy=1",
                "--profiles-dir",
                "{tmp}",
            ],
            "--until takes METRIC=VALUE",
        ),
        (
            [
                "profile",
                "-m",
                "{tiny}",
                "--device",
                "x",
                "--provider",
                "tensorrt",
                "--profiles-dir",
                "{tmp}",
            ],
            "not available",
        ),
        (["fit", "--profile", "{tmp}", "--out", "{tmp}/p.json"], "not a profile directory"),
        (
            ["predict", "--predictor", "{tmp}/none.json", "--arch", "{tmp}/a.json"],
            "cannot read predictor",
        ),
        (["profile-import", "{tmp}", "--device", "x"], "has no plan.json"),
    ],
)
def test_bad_input_is_one_line(args, fragment, tiny_dir, tmp_path):
    filled = [a.replace("{tiny}", str(tiny_dir)).replace("{tmp}", str(tmp_path)) for a in args]
    assert_one_line_error(run(*filled), fragment)


def test_profile_prints_its_result_as_json_on_stdout(tiny_dir, tmp_path):
    """`profile` always prints one JSON document on stdout (rounds and notes on stderr),
    and what it says was measured is what measurements.jsonl holds."""
    result = run(
        "profile", "-m", tiny_dir, "--device", "j", "--n", "2", "--threads", "1",
        "--profiles-dir", tmp_path,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    rows = [json.loads(line) for line in (tmp_path / "j" / "measurements.jsonl").open()]
    # a drifting reference re-times a model: rows per sub-BERT may be more than one
    assert printed["measured"] == 2 == len({r["key"] for r in rows if r["kind"] == "model"})
    device = json.loads((tmp_path / "j" / "device.json").read_text())
    assert device["fingerprint"]["session"]["flush_denormals"] is True
