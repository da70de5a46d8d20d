import json
from pathlib import Path

import pytest

from yoco_deploy.deploy.budgets import parse_target
from yoco_deploy.pipeline.config import PipelineError, load_pipeline
from yoco_deploy.pipeline.run import PipelineRun

from helpers import write_tiny_task


@pytest.fixture
def pipeline(tmp_path):
    model_dir, data_dir = write_tiny_task(tmp_path, n_train=160, n_dev=40)
    return load_pipeline(
        "configs/pipeline-tiny.yaml",
        {"model": str(model_dir), "data_dir": str(data_dir), "workdir": str(tmp_path / "work")},
    )


def test_run_skips_what_is_up_to_date_and_reruns_what_depends_on_a_change(pipeline):
    log = []
    first = PipelineRun(pipeline, say=log.append).run()
    keys = [k for k, _ in first]
    assert keys == [
        "teacher",
        "train",
        "profile:tiny-dev",
        "fit:tiny-dev",
        "search-ship:tiny-dev:latency=80%",
    ]
    assert all(status == "ran" for _, status in first)
    bundles = PipelineRun(pipeline).bundles()
    assert len(bundles) == 1
    manifest = json.loads((bundles[0] / "manifest.json").read_text())
    assert manifest["measured_latency_ms"]["median"] <= manifest["budget_ms"]
    # one folder name per target: its search log and its bundle, as the target was written
    folder = bundles[0].parent.name
    assert folder == "tiny-dev_latency_share-80pct"
    assert [p.name for p in (pipeline.workdir / "search").iterdir()] == [folder]

    again = PipelineRun(pipeline, say=log.append).run()
    assert all(status == "skipped" for _, status in again)

    (pipeline.workdir / "predictors" / "tiny-dev.json").unlink()
    plan = dict(PipelineRun(pipeline).plan())
    assert plan["teacher"] == plan["train"] == plan["profile:tiny-dev"] == "up to date"
    third = dict(PipelineRun(pipeline, say=log.append).run())
    assert [k for k, s in third.items() if s == "ran"] == [
        "fit:tiny-dev",
        "search-ship:tiny-dev:latency=80%",
    ]


def test_dry_run_prints_the_plan(pipeline):
    from typer.testing import CliRunner

    from yoco_deploy.cli.main import app

    path = pipeline.workdir.parent / "p.yaml"
    path.write_text(json.dumps(pipeline.model_dump(mode="json")))
    result = CliRunner().invoke(app, ["run", str(path), "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "teacher" in result.output and "will run (never run)" in result.output
    assert not (pipeline.workdir / "teacher").exists()  # nothing ran
    as_json = CliRunner().invoke(app, ["run", str(path), "--dry-run", "--json"])
    assert as_json.exit_code == 0, as_json.output
    plan = json.loads(as_json.stdout)
    assert plan[0] == {"stage": "teacher", "status": "never run"}


def test_bad_pipeline_is_a_clear_error(tmp_path):
    bad = tmp_path / "p.yaml"
    bad.write_text("model: m\ntask: sst2\nworkdir: w\ntargets: []\nsearh: {}\n")
    with pytest.raises(PipelineError, match=r"unknown key 'searh' \(did you mean 'search'"):
        load_pipeline(bad)
    bad.write_text(
        "model: m\ntask: sst2\nworkdir: w\ntargets: []\ndevices: [{name: d, thread: 2}]\n"
    )
    with pytest.raises(PipelineError, match=r"devices.0.thread' \(did you mean 'threads'"):
        load_pipeline(bad)


def test_pipeline_checks_train_overrides_and_formats_at_load(tmp_path):
    from typing import get_args

    from yoco_deploy.export.sub_bert import FORMATS
    from yoco_deploy.pipeline.config import Format

    assert set(get_args(Format)) == set(FORMATS)
    head = "model: m\ntask: sst2\nworkdir: w\ntargets: []\n"
    bad = tmp_path / "p.yaml"
    bad.write_text(head + "train: {kd: {temprature: 2}}\n")
    with pytest.raises(PipelineError, match=r"kd.temprature' \(did you mean 'temperature'"):
        load_pipeline(bad)
    bad.write_text(head + "ship: {format: int4}\n")
    with pytest.raises(PipelineError, match=r"ship\.format"):
        load_pipeline(bad)


@pytest.mark.parametrize(
    "extra, message",
    [
        ("devices: [{name: d, until: within10=abc}]\n", "is not a number"),
        ("ship: {provider: cuda}\n", "is not available in this onnxruntime build"),
        ("targets: ['../../victim:params=1M']\n", "is not a plain name"),
        ("targets: ['d:latency=1ms,latency=2ms']\n", "given twice"),
    ],
)
def test_everything_checkable_fails_at_load_and_dry_run(tmp_path, extra, message):
    """What used to fail only after the teacher and super-BERT had trained."""
    from helpers import run

    head = "model: m\ntask: sst2\nworkdir: w\n"
    bad = tmp_path / "p.yaml"
    bad.write_text(head + ("" if extra.startswith("targets") else "targets: []\n") + extra)
    with pytest.raises(PipelineError, match=message):
        load_pipeline(bad)
    result = run("run", bad, "--dry-run")
    assert result.exit_code == 1 and message in result.output
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"task": "imdb"}, "unknown task 'imdb'"),
        ({"targets": []}, "targets is empty"),
        ({"targets": ["laptop:latency=50%"]}, "not under devices"),
        ({"targets": ["tiny-dev:latency=0%"]}, "above 0% and at most 100%"),
        ({"max_seq_len": 4096}, "position"),
        ({"train": {"output_dir": "/tmp/elsewhere"}}, "train.output_dir is set by the pipeline"),
        ({"train": {"space": {"depth": [9]}}}, "depth"),
        ({"teacher": {"checkpoint": "/nonexistent"}}, "teacher.checkpoint"),
        ({"data_dir": "/nonexistent"}, "data_dir /nonexistent is not a folder"),
        ({"devices": [{"name": "tiny-dev", "predictor": "/nonexistent.json"}]}, "nonexistent"),
    ],
)
def test_dry_run_checks_what_used_to_fail_after_training(tmp_path, change, message):
    """A 356-case probe found each of these passing --dry-run, then failing after the
    teacher (or the whole pipeline) had run."""
    import yaml

    from helpers import run

    model_dir, data_dir = write_tiny_task(tmp_path, n_train=40, n_dev=10)
    data = yaml.safe_load(Path("configs/pipeline-tiny.yaml").read_text())
    data.update(model=str(model_dir), data_dir=str(data_dir), workdir=str(tmp_path / "w"))
    data.update(change)
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(data))
    result = run("run", path, "--dry-run")
    assert result.exit_code == 1 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "w").exists()


@pytest.mark.parametrize(
    "text, message",
    [("- a\n- b\n", "must be a mapping"), ("hello\n", "must be a mapping"),
     ("seed: 1\nseed: 2\n", "'seed' is given twice")],
)  # fmt: skip
def test_a_pipeline_that_is_not_a_mapping_is_one_line(tmp_path, text, message):
    from helpers import run

    path = tmp_path / "p.yaml"
    path.write_text(text)
    result = run("run", path, "--dry-run")
    assert result.exit_code == 1 and message in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.slow
def test_an_edge_and_a_server_target_ship_from_one_run(pipeline):
    """Run again with a server target beside the edge one: the teacher and the super-BERT
    are reused, the device is profiled at the server's shape too, and each bundle is
    searched, timed and stated at its own shape and statistic."""
    PipelineRun(pipeline, say=lambda s: None).run()
    both = pipeline.model_copy(
        update={"targets": ["tiny-dev:latency=80%", "tiny-dev:latency=100%@batch=4,p=90"]}
    )
    ran = dict(PipelineRun(both, say=lambda s: None).run())
    assert ran["teacher"] == ran["train"] == "skipped"
    assert ran["profile:tiny-dev"] == ran["search-ship:tiny-dev:latency=100%@batch=4,p=90"] == "ran"
    device = json.loads((both.workdir / "profiles" / "tiny-dev" / "device.json").read_text())
    assert device["shapes"] == [[1, 16], [4, 16]]
    read = [json.loads((b / "manifest.json").read_text()) for b in PipelineRun(both).bundles()]
    manifests = {m["target"]: m for m in read}
    edge, server = (manifests[parse_target(t).label()] for t in both.targets)
    assert (edge["batch"], edge["statistic"]) == (1, "median")
    assert (server["batch"], server["seq_len"], server["statistic"]) == (4, 16, "p90")
    lat = server["measured_latency_ms"]
    assert lat["median"] <= lat["percentile"] <= server["budget_ms"]
    assert server["throughput"] == pytest.approx(4 * 1000 / lat["median"])
