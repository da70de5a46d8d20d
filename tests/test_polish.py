"""Polish: one sub-BERT distilled alone (the trainer's ``arch``), and ship's --polish step:
resumable, kept only if better on the search split, recorded in the manifest."""

import json

import pytest
import torch
from typer.testing import CliRunner

from yoco_deploy.arch import Arch
from yoco_deploy.deploy.budgets import Target
from yoco_deploy.deploy.per_target import DeployJob
from yoco_deploy.deploy.polish import AUTO_SHARE, PolishError, PolishSpec, polish
from yoco_deploy.deploy.ship import ShipSettings
from yoco_deploy.deploy.supernet import SuperBertEvaluator, load_supernet
from yoco_deploy.manifest import BundleManifest
from yoco_deploy.train.config import finetune_settings, load_config, parse_config
from yoco_deploy.train.trainer import Trainer

from helpers import write_tiny_task

QUIET = {"log": lambda s: None}


@pytest.fixture(scope="module")
def supernet_dir(tmp_path_factory):
    """A tiny teacher fine-tuned, then a tiny super-BERT trained from it (a few seconds)."""
    root = tmp_path_factory.mktemp("polish")
    model_dir, data_dir = write_tiny_task(root)
    common = {"model": str(model_dir), "task": "sst2", "data_dir": str(data_dir),
              "max_seq_len": 16, "batch_size": 8}  # fmt: skip
    teacher = root / "teacher"
    cfg = finetune_settings(3, 1e-3, **common, output_dir=str(teacher))
    Trainer(parse_config(cfg), **QUIET).train()
    paths = {"model": str(teacher / "final"), "teacher": str(teacher / "final"),
             "data_dir": str(data_dir), "output_dir": str(root / "super")}  # fmt: skip
    short = [{"name": "all", "heads": "all", "ffn": "all", "depth": "all", "epochs": 1,
              "lr": 1e-3}]  # fmt: skip
    Trainer(load_config("configs/tiny.yaml", {**paths, "phases": short}), **QUIET).train()
    return root / "super" / "final"


def small(space) -> Arch:
    return Arch.uniform(min(space.depth_choices), min(space.head_choices), min(space.ffn_choices))


@pytest.mark.parametrize(
    "text, spec",
    [("300", PolishSpec(steps=300)), ("5min", PolishSpec(minutes=5.0)),
     ("1.5m", PolishSpec(minutes=1.5)), ("0", None), ("off", None),
     ("auto", PolishSpec(share=AUTO_SHARE))],
)  # fmt: skip
def test_polish_values_parse(text, spec):
    assert PolishSpec.parse(text) == spec


@pytest.mark.parametrize("text", ["abc", "-3", "5h", "0min", "3.5"])
def test_a_bad_polish_value_is_refused(text):
    with pytest.raises(PolishError, match="steps"):
        PolishSpec.parse(text)


def test_ship_with_a_bad_polish_is_one_error_line(supernet_dir, tmp_path):
    from yoco_deploy.cli.main import app

    result = CliRunner().invoke(
        app, ["ship", "--supernet", str(supernet_dir), "-t", "tiny-cpu:params=1G",
              "--arch", small_json(), "--polish", "lots", "--bundles", str(tmp_path / "b")],
    )  # fmt: skip
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 1 and len(lines) == 1, result.output
    assert lines[0].startswith("error: --polish 'lots'")
    assert not (tmp_path / "b").exists()


def test_polish_is_on_by_default_as_a_share_of_the_super_berts_steps(supernet_dir):
    net = load_supernet(str(supernet_dir))
    assert ShipSettings().polish == ShipSettings.from_options().polish == PolishSpec.auto()
    steps = PolishSpec.auto().steps_for(net, small(net.super_bert.space))
    assert steps == max(1, round(AUTO_SHARE * net.record.steps)) and net.record.steps > 0


def test_the_default_polish_skips_a_plain_bert_but_an_explicit_one_is_refused(tmp_path):
    model_dir, data_dir = write_tiny_task(tmp_path / "plain")
    net = load_supernet(str(model_dir), "sst2", data_dir, 16)
    assert net.record is None
    said = []
    job = ship_job(tmp_path, PolishSpec.auto())
    (cm,) = job.cost_models(net, searching=False)
    arch = small(net.super_bert.space)
    shipped = job.run_ship(net, cm, [arch], say=said.append)
    assert shipped.manifest.polish is None
    assert any(s.startswith("not polished (the default, auto)") for s in said), said
    with pytest.raises(PolishError, match="no training record"):
        ship_job(tmp_path / "explicit", PolishSpec(steps=3)).run_ship(
            net, cm, [arch], lambda s: None
        )


def small_json() -> str:
    return json.dumps(Arch.uniform(1, 1, 32).to_dict())


def test_a_sub_bert_trained_alone_moves_only_its_own_weights(supernet_dir, tmp_path):
    net = load_supernet(str(supernet_dir))
    arch = small(net.super_bert.space)
    settings = {**net.record.config, "model": str(supernet_dir), "output_dir": str(tmp_path),
                "arch": arch.to_dict(), "reorder": False, "eval_every": 5, "log_every": 5,
                "phases": [{"name": "alone", "epochs": 0.5, "lr": 1e-3}]}  # fmt: skip
    trainer = Trainer(parse_config(settings), **QUIET)
    before = {k: v.clone() for k, v in trainer.super_bert.state_dict().items()}
    trainer.train()
    after = trainer.super_bert.state_dict()
    kept = net.super_bert.space.kept_layers(arch.depth)
    layers = {int(k.split("encoder.layer.")[1].split(".")[0]) for k in after
              if "encoder.layer." in k and not torch.equal(before[k], after[k])}  # fmt: skip
    assert layers and layers <= set(kept)  # layers the sub-BERT does not use never move
    rows = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r["kind"] == "eval"]
    assert {r["name"] for r in evals} == {"alone"} and len(evals) >= 3  # a curve, not one point
    seconds = [r["train_s"] for r in evals]
    assert seconds == sorted(seconds) and seconds[0] > 0


def ship_job(tmp_path, spec):
    return DeployJob(
        targets=(Target("tiny-cpu", {"params": 1e9}),),
        ship=ShipSettings(seq_len=16, min_metric=0.0, polish=spec),
        bundles=tmp_path / "bundles",
    )


def test_ship_polishes_and_records_it_with_what_chose_it(supernet_dir, tmp_path):
    net = load_supernet(str(supernet_dir))
    job = ship_job(tmp_path, PolishSpec(steps=30, lr=1e-3))
    (cm,) = job.cost_models(net, searching=False)
    arch = small(net.super_bert.space)
    shipped = job.run_ship(net, cm, [arch], say=lambda s: None)
    record = shipped.manifest.polish
    assert record["steps"] == 30 and record["split"] == "search" and record["wall_s"] > 0
    assert record["teacher"] == "final" and record["metric"] == "accuracy"
    assert record["kept"] == (record["after"] > record["before"])
    on_disk = json.loads((shipped.path / "manifest.json").read_text())
    assert on_disk["polish"] == record
    # what chose it: the weights and data its score came from, the space, no predictor
    chose = on_disk["provenance"]
    assert {k: chose[k] for k in ("super_bert", "data")} == net.score_inputs
    assert len(chose["space"]) == 64 and chose["predictor"] is None
    assert BundleManifest.read(shipped.path).provenance == chose
    # the ONNX file is the version that was kept: its dev metric is what the manifest says
    from yoco_deploy.deploy.quality import onnx_metric

    metric = onnx_metric(shipped.path / "model.onnx", net.data, net.tokenizer, 16)
    assert metric["value"] == pytest.approx(shipped.manifest.metric["value"])


def test_a_polish_that_scores_worse_is_not_kept(supernet_dir, tmp_path):
    """A learning rate that wrecks the sub-BERT: the search split says so, and the
    unpolished weights ship (the bundle's dev metric is the unpolished sub-BERT's)."""
    net = load_supernet(str(supernet_dir))
    arch = small(net.super_bert.space)
    evaluator = SuperBertEvaluator(net)
    wrecked = polish(net, arch, PolishSpec(steps=20, lr=3.0), tmp_path, evaluator, say=str)
    assert not wrecked.kept and wrecked.record["after"] < wrecked.record["before"]
    assert wrecked.super_bert is net.super_bert


def test_an_interrupted_polish_resumes_to_the_same_weights(supernet_dir, tmp_path):
    net = load_supernet(str(supernet_dir))
    arch = small(net.super_bert.space)
    evaluator = SuperBertEvaluator(net)
    spec = PolishSpec(steps=20, lr=1e-3)

    def interrupt(line: str) -> None:
        if line.startswith("step 10/"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        polish(net, arch, spec, tmp_path / "a", evaluator, say=interrupt)
    assert not any((tmp_path / "a").glob("*/final"))
    said = []
    resumed = polish(net, arch, spec, tmp_path / "a", evaluator, say=said.append)
    assert any(line.startswith("resumed at step 10/20") for line in said), said
    straight = polish(net, arch, spec, tmp_path / "b", evaluator, say=str)
    assert resumed.record["after"] == straight.record["after"]
    for key, value in straight.super_bert.state_dict().items():
        assert torch.equal(value, resumed.super_bert.state_dict()[key]), key
    # a finished polish is reused, not trained again
    again = []
    polish(net, arch, spec, tmp_path / "a", evaluator, say=again.append)
    assert not any(line.startswith("polishing") for line in again)


def test_polish_without_the_teacher_is_one_clear_error(supernet_dir, tmp_path):
    from dataclasses import replace

    net = load_supernet(str(supernet_dir))
    gone = replace(net.record, config={**net.record.config, "teacher": str(tmp_path / "no")})
    with pytest.raises(PolishError, match="teacher"):
        polish(replace(net, record=gone), small(net.super_bert.space), PolishSpec(steps=5),
               tmp_path, SuperBertEvaluator(net))  # fmt: skip
