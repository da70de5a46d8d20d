import json
import subprocess
import sys

import pytest

from yoco_deploy import runner
from yoco_deploy.budgets import BudgetError, CostModel, Target, parse_target
from yoco_deploy.deploy import SuperBertEvaluator, Supernet, search_target, ship_result
from yoco_deploy.fit import fit_profile
from yoco_deploy.profiling import ProfileSettings, profile_device
from yoco_deploy.search import SearchSettings
from yoco_deploy.ship import ShipSettings

from helpers import FakeBackend, write_tiny_task

FAST = runner.Protocol(warmup=2, min_runs=10, max_runs=20, chunk=10)
REQUIRED = (
    "arch",
    "arch_id",
    "params",
    "flops",
    "budget_ms",
    "predicted_latency_ms",
    "measured_latency_ms",
    "device",
    "provider",
    "threads",
    "seq_len",
    "batch",
    "metric",
    "onnx_sha256",
    "libraries",
)


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    from yoco_deploy.data import load_task
    from yoco_deploy.loading import load_tokenizer
    from yoco_deploy.super_bert import SuperBert

    root = tmp_path_factory.mktemp("ship")
    model_dir, data_dir = write_tiny_task(root, n_train=200, n_dev=40)
    sb = SuperBert.from_pretrained(str(model_dir), 2).eval()
    data = load_task("sst2", data_dir, search_fraction=0.2)
    net = Supernet(sb, load_tokenizer(str(model_dir)), data, None, 16)
    # a latency predictor for the device "tiny-cpu", fitted on a fake device's profile
    settings = ProfileSettings(n=16, protocol=FAST, threads=1)
    profile_device(
        sb.space,
        root / "profiles" / "tiny-cpu",
        "tiny-cpu",
        settings,
        "tiny",
        progress=lambda *a: None,
        backend=FakeBackend(),
    )
    fit_profile(root / "profiles" / "tiny-cpu", root / "predictors" / "tiny-cpu.json", plot=False)
    return net, root


def cost_model(net, target):
    from yoco_deploy.deploy import cost_model_for

    return cost_model_for(target, net[0], net[1] / "predictors", 16, 1)


def test_search_then_ship_meets_the_budget(net, tmp_path):
    supernet, _ = net
    target = parse_target("tiny-cpu:latency=100ms,params=3M")
    cm = cost_model(net, target)
    settings = SearchSettings(evaluations=12, seed=0)
    result = search_target(
        supernet, cm, settings, tmp_path / "search", SuperBertEvaluator(supernet)
    )
    shipped = ship_result(
        supernet,
        cm,
        result,
        tmp_path / "bundles",
        ShipSettings(threads=1, seq_len=16, protocol=FAST),
        say=lambda s: None,
    )
    m = shipped.manifest
    assert all(k in m for k in REQUIRED)
    assert m["measured_latency_ms"]["median"] <= 100 and m["params"] <= 3e6
    assert shipped.path.name.startswith("tiny-cpu@") and "_accuracy@" in shipped.path.name
    assert {"model.onnx", "config.json", "tokenizer.json", "manifest.json"} <= {
        p.name for p in shipped.path.iterdir()
    }
    # the 20-line onnxruntime + tokenizers script of the README runs on it
    done = subprocess.run(
        [
            sys.executable,
            "examples/use_bundle.py",
            str(shipped.path),
            "good great film",
            "awful boring plot",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-1500:]
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert len(lines) == 2 and all(len(r["logits"]) == 2 for r in lines)


def test_unmeetable_measured_latency_ships_nothing(net, tmp_path):
    supernet, _ = net
    target = Target("tiny-cpu", {"latency": 1e-4})  # no model runs in 0.1 microseconds
    cm = cost_model(net, target)
    cm.feasible = lambda arch: True  # suppose the predictor was wrong
    archs = supernet.super_bert.space.sampler(0).sample_many(2)
    from yoco_deploy.ship import ship_target

    with pytest.raises(BudgetError, match="smallest measured latency was"):
        ship_target(
            supernet.super_bert,
            supernet.tokenizer,
            supernet.data,
            target,
            cm,
            archs,
            tmp_path / "bundles",
            ShipSettings(threads=1, seq_len=16, protocol=FAST),
            say=lambda s: None,
        )
    assert not (tmp_path / "bundles").exists() or not any((tmp_path / "bundles").iterdir())


def test_latency_budget_needs_a_predictor(net, tmp_path):
    supernet, _ = net
    with pytest.raises(BudgetError, match="no latency predictor for device 'phone'"):
        cost_model(net, parse_target("phone:latency=5ms"))
    assert isinstance(CostModel(Target("x", {"params": 1e9}), supernet.super_bert.space), CostModel)
