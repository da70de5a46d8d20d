import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from yoco_deploy.train.config import ConfigError, load_config, parse_config
from yoco_deploy.train.data import DataError, compute_metrics, get_task, load_task
from yoco_deploy.train.trainer import Trainer

from helpers import write_tiny_task


@pytest.fixture(scope="module")
def tiny_task(tmp_path_factory):
    """A random tiny BERT, generated sentences, and a teacher fine-tuned by the CLI."""
    from helpers import run

    root = tmp_path_factory.mktemp("task")
    model_dir, data_dir = write_tiny_task(root)
    result = run(
        "finetune", "--model", model_dir, "--task", "sst2", "--data-dir", data_dir,
        "--out", root / "teacher", "--epochs", 4, "--lr", 1e-3, "--batch-size", 8,
        "--max-seq-len", 16, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)  # finetune --json: the teacher and its evaluation
    assert printed["final"] == str(root / "teacher" / "final")
    assert "max" in [r["name"] for r in printed["evaluations"]]
    return model_dir, data_dir, root / "teacher" / "final"


def tiny_config(model_dir, data_dir, teacher, out, **overrides):
    paths = {"model": model_dir, "data_dir": data_dir, "teacher": teacher, "output_dir": out}
    return load_config("configs/tiny.yaml", {**{k: str(v) for k, v in paths.items()}, **overrides})


def loss_of(trainer, arch):
    batch = {k: torch.from_numpy(v[:128]) for k, v in trainer.train_enc.items()}
    trainer.super_bert.eval()
    trainer.super_bert.set_active(arch)
    with torch.no_grad():
        logits = trainer.super_bert(**{k: v for k, v in batch.items() if k != "labels"})
    return float(torch.nn.functional.cross_entropy(logits, batch["labels"]))


def test_teacher_was_fine_tuned(tiny_task, tmp_path):
    teacher = Trainer(
        tiny_config(*tiny_task, tmp_path / "t", model=str(tiny_task[2])), log=lambda s: None
    )
    assert teacher.evaluate(teacher.space.max_arch()).metrics["accuracy"] >= 0.8


def test_training_lowers_the_loss_of_max_and_min(tiny_task, tmp_path):
    trainer = Trainer(tiny_config(*tiny_task, tmp_path / "run"), log=lambda s: None)
    space = trainer.space
    before = {
        n: loss_of(trainer, a) for n, a in (("max", space.max_arch()), ("min", space.min_arch()))
    }
    trainer.train()
    after = {
        n: loss_of(trainer, a) for n, a in (("max", space.max_arch()), ("min", space.min_arch()))
    }
    assert after["max"] < 0.8 * before["max"] and after["min"] < 0.8 * before["min"]
    out = tmp_path / "run"
    assert (out / "final" / "yoco_supernet.json").is_file()
    assert (out / "metric_vs_flops.png").is_file()
    rows = [json.loads(line) for line in (out / "log.jsonl").open()]
    evals = {(r["phase"], r["name"]) for r in rows if r["kind"] == "eval"}
    assert ("layer0", "min") in evals and ("final", "max") in evals
    meta = json.loads((out / "final" / "yoco_supernet.json").read_text())
    assert len(meta["sng"]["theta"]) == 1 + space.dims.num_layers
    for final in (tiny_task[2], out / "final"):  # the teacher and the super-BERT: SST-2's names
        config = json.loads((final / "config.json").read_text())
        assert config["id2label"] == {"0": "negative", "1": "positive"}


def test_resumed_run_equals_uninterrupted_run(tiny_task, tmp_path):
    straight = Trainer(tiny_config(*tiny_task, tmp_path / "a"), log=lambda s: None)
    straight.train()
    first = Trainer(tiny_config(*tiny_task, tmp_path / "b"), log=lambda s: None)
    first.train(stop_at=7)  # mid-phase, between two SNG updates: checkpoints and returns
    resumed = Trainer(tiny_config(*tiny_task, tmp_path / "b"), log=lambda s: None)
    resumed.train(resume=True)
    a = load_file(tmp_path / "a" / "checkpoint" / "model.safetensors")
    b = load_file(tmp_path / "b" / "checkpoint" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ta = json.loads((tmp_path / "a" / "final" / "yoco_supernet.json").read_text())["sng"]["theta"]
    tb = json.loads((tmp_path / "b" / "final" / "yoco_supernet.json").read_text())["sng"]["theta"]
    assert ta == tb


def test_a_resumed_run_logs_each_step_once(tiny_task, tmp_path):
    """Rows logged after the last checkpoint (a kill -9 between checkpoints) are not
    repeated by the resumed run."""

    def keys(run):
        rows = [json.loads(line) for line in (run / "log.jsonl").open()]
        return [(r["kind"], r["step"], r["phase"], r.get("name")) for r in rows]

    straight = Trainer(tiny_config(*tiny_task, tmp_path / "a"), log=lambda s: None)
    straight.train()
    first = Trainer(tiny_config(*tiny_task, tmp_path / "b"), log=lambda s: None)
    first.train(stop_at=20)  # checkpoint_every is 20
    late = {"kind": "train", "step": 30, "phase": "ffn0", "loss": 0.0}
    with open(tmp_path / "b" / "log.jsonl", "a") as f:  # written after it, then killed
        f.write(json.dumps(late) + "\n")
    Trainer(tiny_config(*tiny_task, tmp_path / "b"), log=lambda s: None).train(resume=True)
    assert keys(tmp_path / "b") == keys(tmp_path / "a")


def test_train_json_prints_the_final_model_and_its_final_evaluations(tiny_task, tmp_path):
    """`train --json` prints one JSON document on stdout (logs stay on stderr): where the
    super-BERT landed and its final evaluations, as log.jsonl recorded them."""
    import yaml
    from typer.testing import CliRunner

    from yoco_deploy.cli.main import app

    model_dir, data_dir, teacher = tiny_task
    config = yaml.safe_load(Path("configs/tiny.yaml").read_text())
    config.update(
        model=str(model_dir), data_dir=str(data_dir), teacher=str(teacher),
        output_dir=str(tmp_path / "run"),
        phases=[{"name": "all", "heads": "all", "ffn": "all", "depth": "all", "epochs": 1,
                 "lr": 0.001}],
    )  # fmt: skip
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["train", "--config", str(path), "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    assert printed["final"] == str(tmp_path / "run" / "final")
    assert (tmp_path / "run" / "final" / "yoco_supernet.json").is_file()
    logged = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").open()]
    final = [r for r in logged if r.get("kind") == "eval" and r.get("phase") == "final"]
    assert printed["evaluations"] == final and final
    assert {r["name"] for r in final} >= {"max", "min"}
    assert all(0 <= r["accuracy"] <= 1 for r in final)


def test_misspelt_config_key_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key 'lerning_rate'"):
        parse_config({"model": "m", "task": "sst2", "output_dir": "o", "lerning_rate": 1})
    with pytest.raises(ConfigError, match=r"did you mean 'temperature'"):
        parse_config({"model": "m", "task": "sst2", "output_dir": "o", "kd": {"temprature": 2}})
    with pytest.raises(ConfigError, match=r"phases.0.epoch' \(did you mean 'epochs'"):
        parse_config({"model": "m", "task": "sst2", "output_dir": "o", "phases": [{"epoch": 1}]})
    bad = tmp_path / "c.yaml"
    bad.write_text("model: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_glue_tsv_pair_task(tmp_path):
    rows = [
        "index\tsentence1\tsentence2\tlabel",
        "0\tA man sleeps.\tSomeone rests.\tentailment",
        '1\tIt is "sunny".\tIt rains.\tnot_entailment',
        "2\tbroken line",
    ]
    for name in ("train", "dev"):
        (tmp_path / f"{name}.tsv").write_text("\n".join(rows) + "\n")
    data = load_task("rte", tmp_path, search_fraction=0.5, seed=0)
    assert len(data.train) + len(data.search) == 2 and len(data.dev) == 2  # malformed skipped
    assert data.dev.text_b == ("Someone rests.", "It rains.")
    assert data.dev.labels.tolist() == [0, 1] and data.dev.text_a[1] == 'It is "sunny".'


def test_csv_with_named_columns(tmp_path):
    for name in ("train", "dev"):
        (tmp_path / f"{name}.csv").write_text(
            "review,stars\n" + "".join(f'"text number {i}, good",{i % 2}\n' for i in range(20))
        )
    data = load_task("sst2", tmp_path, text_columns=["review"], label_column="stars", seed=1)
    assert len(data.train) == 18 and len(data.search) == 2 and len(data.dev) == 20
    assert data.dev.text_a[0] == "text number 0, good" and data.dev.text_b is None
    with pytest.raises(DataError, match="missing column"):
        load_task("sst2", tmp_path, text_columns=["text"], label_column="stars")


def test_search_split_is_seeded_and_disjoint(tiny_task):
    _, data_dir, _ = tiny_task
    a = load_task("sst2", data_dir, seed=3)
    b = load_task("sst2", data_dir, seed=3)
    assert a.search.text_a == b.search.text_a
    assert len(a.search) == 24 and len(a.train) == 216


def test_metrics():
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    labels = np.array([1, 0, 0, 0])
    assert compute_metrics(get_task("sst2"), logits, labels) == {"accuracy": 0.75}
    assert set(compute_metrics(get_task("mrpc"), logits, labels)) == {"accuracy", "f1"}
    assert set(compute_metrics(get_task("cola"), logits, labels)) == {"accuracy", "mcc"}
    sts = compute_metrics(get_task("stsb"), np.array([[1.0], [2.0], [3.0]]), np.array([1, 2, 4.0]))
    assert sts["spearman"] == pytest.approx(1.0)


def test_trimmed_padding_gives_the_same_logits():
    from yoco_deploy.model.super_bert import SuperBert
    from yoco_deploy.train.data import to_tensors, trim_padding

    from helpers import tiny_bert

    sb = SuperBert(tiny_bert()).eval()
    sb.set_active(sb.space.min_arch())
    lengths = np.array([5, 9, 3])
    mask = (np.arange(16)[None, :] < lengths[:, None]).astype(np.int64)
    ids = np.where(mask == 1, np.random.default_rng(0).integers(5, 90, mask.shape), 0)
    batch = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    trimmed = trim_padding({**batch, "labels": np.array([0, 1, 0])})
    assert trimmed["input_ids"].shape == (3, 9) and trimmed["labels"].shape == (3,)
    with torch.no_grad():
        full = sb(**to_tensors(batch))
        short = sb(**to_tensors({k: v for k, v in trimmed.items() if k != "labels"}))
    torch.testing.assert_close(short, full, atol=1e-5, rtol=1e-5)


DDP_SCRIPT = """
import hashlib, json, sys
sys.path.insert(0, {tests!r})
from yoco_deploy.train.config import load_config
from yoco_deploy.train.trainer import Trainer

cfg = load_config("configs/tiny.yaml", {overrides!r})
trainer = Trainer(cfg, log=lambda s: None)
trainer.train()
weights = hashlib.sha256()
for name, p in sorted(trainer.super_bert.state_dict().items()):
    weights.update(name.encode() + p.detach().cpu().numpy().tobytes())
rank = trainer.accelerator.process_index
json.dump({{"world": trainer.world, "steps_per_epoch": trainer.steps_per_epoch,
           "theta": trainer.sng.state_dict()["theta"], "weights": weights.hexdigest()}},
          open({out!r} + f"/rank{{rank}}.json", "w"))
trainer.accelerator.wait_for_everyone()
trainer.accelerator.end_training()
"""


@pytest.mark.slow  # two processes and a rendezvous: the slow suite
def test_two_process_ddp_training_stays_in_sync(tiny_task, tmp_path):
    """What `accelerate launch --multi_gpu` runs, on CPU (torchrun + gloo): each process
    takes its own slice of the batch, and weights and theta stay identical."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    model_dir, data_dir, teacher = tiny_task
    overrides = {
        "model": str(model_dir), "data_dir": str(data_dir), "teacher": str(teacher),
        "output_dir": str(tmp_path / "run"),
    }  # fmt: skip
    script = tmp_path / "ddp.py"
    tests = str(Path(__file__).parent)
    script.write_text(DDP_SCRIPT.format(tests=tests, overrides=overrides, out=str(tmp_path)))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    cmd += ["2", str(script)]
    # ACCELERATE_USE_CPU is what `accelerate launch --cpu` sets: gloo instead of nccl
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "1"}
    root = Path(tests).parent
    done = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    single = Trainer(tiny_config(*tiny_task, tmp_path / "single"), log=lambda s: None)
    assert a["world"] == 2 and a["steps_per_epoch"] == single.steps_per_epoch // 2
    assert a["weights"] == b["weights"] and a["theta"] == b["theta"]
    assert (tmp_path / "run" / "final" / "yoco_supernet.json").is_file()


def test_sandwich_trains_max_min_and_sampled_and_learns_theta(tiny_task, tmp_path):
    """The sandwich rule trains the phase's max, its min and k sampled sub-BERTs each
    step, the latter distilled from the max in place; sub-BERTs drawn from p_theta still
    move theta."""
    config = tiny_config(*tiny_task, tmp_path / "sw", sampling="sandwich", sandwich_random=2)
    trainer = Trainer(config, log=lambda s: None)
    seen, soft_targets, updates = [], [], []
    step, update = trainer.train_step, trainer.sng.update

    def spy_step(model, batch, t_out, archs):
        seen.append(list(archs))
        return step(model, batch, t_out, archs)

    def spy_loss(model, batch, t_out, arch, soft=None):
        soft_targets.append(soft is not None)
        return loss(model, batch, t_out, arch, soft)

    def spy_update(codes, losses, sub=None):
        updates.append(len(codes))
        return update(codes, losses, sub)

    loss = trainer.step_loss
    trainer.train_step, trainer.step_loss, trainer.sng.update = spy_step, spy_loss, spy_update
    space = trainer.space
    before = [t.copy() for t in trainer.sng.theta]
    trainer.train()
    last = trainer.plans[-1]
    assert all(len(archs) == 4 for archs in seen)
    assert seen[-1][0] == space.max_arch() and seen[-1][1] == space.min_arch()
    assert space.min_arch().depth < space.max_arch().depth and last.phase.depth == "all"
    # per step: the max on labels and the teacher, then 3 in-place distilled (then theta's)
    assert soft_targets[:4] == [False, True, True, True]
    assert updates and all(n == trainer.config.sng.lam for n in updates)
    assert any(not np.allclose(a, b) for a, b in zip(before, trainer.sng.theta, strict=True))


def test_theta_candidates_are_scored_before_the_optimizer_step(tiny_task, tmp_path):
    """The lambda candidates of an SNG update are ranked on the weights that produced
    this step's gradients, not on weights just trained on the last of them."""
    trainer = Trainer(tiny_config(*tiny_task, tmp_path / "order"), log=lambda s: None)
    scored = []
    update = trainer.sng.update
    steps_at_update = []

    def spy_update(codes, losses, sub=None):
        # the weights at scoring time: compare with a snapshot taken before the step
        steps_at_update.append(trainer.step)
        scored.append(
            {k: v.detach().clone() for k, v in trainer.super_bert.model.named_parameters()}
        )
        return update(codes, losses, sub)

    snapshots = {}
    step = trainer.train_step

    def spy_step(model, batch, t_out, archs):
        snapshots[trainer.step] = {
            k: v.detach().clone() for k, v in trainer.super_bert.model.named_parameters()
        }
        return step(model, batch, t_out, archs)

    trainer.sng.update, trainer.train_step = spy_update, spy_step
    trainer.train(stop_at=12)
    assert steps_at_update
    for at, weights in zip(steps_at_update, scored, strict=True):
        assert all(torch.equal(weights[k], snapshots[at][k]) for k in weights)


def test_theta_updates_do_not_die_out_with_exploration(tiny_task, tmp_path):
    """Exploit draws are collected until lambda are in hand, so theta keeps learning when
    p(exploit) is low (they used to need lambda consecutive exploit draws)."""
    trainer = Trainer(tiny_config(*tiny_task, tmp_path / "rare"), log=lambda s: None)
    trainer.sng.exploit_probability = lambda: 0.3
    updates = []
    update = trainer.sng.update
    trainer.sng.update = lambda codes, losses, sub=None: (
        updates.append(1) or update(codes, losses, sub)
    )
    trainer.train(stop_at=40)
    # 40 steps x 0.3 exploit draws / lambda 2: about 6 updates (0.3^2 x 20 = 1.8 before)
    assert len(updates) >= 4
