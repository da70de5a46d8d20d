import json
import subprocess
import sys

import pytest

from yoco_deploy import runtime
from yoco_deploy.deploy.budgets import BudgetError, CostModel, Target, parse_target
from yoco_deploy.deploy.per_target import DeployJob
from yoco_deploy.deploy.search import SearchSettings
from yoco_deploy.deploy.ship import ShipSettings
from yoco_deploy.deploy.supernet import SuperBertEvaluator, Supernet
from yoco_deploy.device.fit import fit_profile
from yoco_deploy.device.profiling import ProfileSettings, profile_device

from helpers import FakeBackend, write_tiny_task

FAST = runtime.Protocol(warmup=2, min_runs=10, max_runs=20, chunk=10)
REQUIRED = (
    "arch",
    "arch_id",
    "params",
    "flops",
    "budget_ms",
    "predicted_latency_ms",
    "measured_latency_ms",
    "device",
    "session",
    "machine",
    "seq_len",
    "batch",
    "metric",
    "onnx_sha256",
    "libraries",
)


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    from yoco_deploy.model.loading import load_tokenizer
    from yoco_deploy.model.super_bert import SuperBert
    from yoco_deploy.train.data import load_task

    root = tmp_path_factory.mktemp("ship")
    model_dir, data_dir = write_tiny_task(root, n_train=200, n_dev=40)
    data = load_task("sst2", data_dir, search_fraction=0.2)
    sb = SuperBert.from_pretrained(str(model_dir), 2, label_names=data.task.label_names).eval()
    net = Supernet(sb, load_tokenizer(str(model_dir)), data, None, 16)
    # a latency predictor for the device "tiny-cpu", fitted on a fake device's profile at
    # lengths around the ship's 16 (so the ship's own shape has no profiled reference)
    settings = ProfileSettings(
        n=16, shapes=((1, 8), (1, 32)), protocol=FAST, session=runtime.SessionSpec(threads=1)
    )
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
    from yoco_deploy.deploy.per_target import cost_model_for

    return cost_model_for(target, net[0], net[1] / "predictors" / f"{target.name}.json", 16, 1)


def test_search_then_ship_meets_the_budget(net, tmp_path):
    supernet, _ = net
    target = parse_target("tiny-cpu:latency=100ms,params=3M")
    job = DeployJob(
        targets=(target,),
        search=SearchSettings(evaluations=12, seed=0),
        # an untrained tiny model: an explicit floor of 0 lets it through the gate
        ship=ShipSettings(seq_len=16, protocol=FAST, min_metric=0.0),
        predictors=net[1] / "predictors",
        logs=tmp_path / "search",
        bundles=tmp_path / "bundles",
    )
    (cm,) = job.cost_models(supernet)
    assert cm.target == target and cm.seq_len == 16  # the job's shapes reach the cost model
    result = job.run_search(supernet, cm, SuperBertEvaluator(supernet))
    assert (tmp_path / "search" / target.slug() / "result.json").is_file()
    shipped = job.run_ship(supernet, cm, [c.arch for c in result.ranked], say=lambda s: None)
    m = shipped.manifest.to_dict()
    assert m["quality"]["floor"] == 0.0 and m["quality"]["rule"] == "--min-metric"
    assert all(k in m for k in REQUIRED)
    # the session once: not again as provider and threads, nor inside the machine record
    assert "provider" not in m and "threads" not in m and "session" not in m["machine"]
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
    assert {r["name"] for r in lines} <= {"negative", "positive"}  # SST-2's class names
    # the Python API gives the same answers, in a process without torch or transformers
    api = subprocess.run(
        [sys.executable, "-c", WITHOUT_TORCH, str(shipped.path)], capture_output=True, text=True
    )
    assert api.returncode == 0, api.stderr[-1500:]
    got = json.loads(api.stdout)
    assert [p["label"] for p in got] == [r["label"] for r in lines]
    for p, r in zip(got, lines, strict=True):
        assert p["logits"] == pytest.approx(r["logits"], abs=1e-5)
        assert 0.5 <= p["score"] <= 1.0
        assert p["name"] == r["name"] == ("negative", "positive")[p["label"]]
    check_bundle_describes_itself(shipped.path, m)
    check_classify_command(shipped.path, got)


def check_classify_command(bundle, expected):
    """`yoco-deploy classify` is the API's shell: the same names, as text or JSON."""
    from typer.testing import CliRunner

    from yoco_deploy.cli.main import app

    texts = ["good great film", "awful boring plot"]
    run = CliRunner().invoke(app, ["classify", str(bundle), *texts, "--json"])
    assert run.exit_code == 0, run.output
    rows = json.loads(run.stdout)
    assert [r["name"] for r in rows] == [p["name"] for p in expected]
    assert [r["text"] for r in rows] == texts
    piped = CliRunner().invoke(app, ["classify", str(bundle), "-"], input="\n".join(texts) + "\n")
    assert piped.exit_code == 0, piped.output
    assert [line.split("\t")[0] for line in piped.stdout.splitlines()] == [r["name"] for r in rows]
    for args in ([str(bundle.parent / "nope"), "x"], [str(bundle)]):  # no bundle; no text
        wrong = CliRunner().invoke(app, ["classify", *args])
        assert wrong.exit_code == 1 and wrong.output.startswith("error: "), wrong.output
        assert len(wrong.output.strip().splitlines()) == 1


def check_bundle_describes_itself(bundle, manifest):
    """Labels in the config, a card a hub indexes, ONNX metadata, the profiled length."""
    import onnxruntime as ort
    from huggingface_hub import ModelCard
    from transformers import AutoTokenizer

    from yoco_deploy.export import metadata as onnx_metadata
    from yoco_deploy.util.hashing import file_sha256

    config = json.loads((bundle / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert config["label2id"] == {"negative": 0, "positive": 1}
    assert manifest["labels"] == ["negative", "positive"]

    card = ModelCard.load(bundle / "README.md")
    data = card.data.to_dict()
    assert data["pipeline_tag"] == "text-classification"
    assert {"onnx", "int8"} <= set(data["tags"])
    result = card.data.eval_results[0]
    assert result.metric_type == "accuracy"
    assert result.metric_value == pytest.approx(manifest["metric"]["value"], abs=1e-4)
    assert f"{manifest['measured_latency_ms']['median']:.3f} ms" in card.text
    assert manifest["device"] in card.text and "truncated" in card.text

    session = ort.InferenceSession(str(bundle / "model.onnx"), providers=["CPUExecutionProvider"])
    meta = onnx_metadata.read(session)
    assert meta["arch_id"] == manifest["arch_id"]
    assert json.loads(meta["arch"]) == manifest["arch"]
    import yoco_deploy

    assert meta["version"] == yoco_deploy.__version__
    assert json.loads(meta["labels"]) == ["negative", "positive"]
    assert int(meta["seq_len"]) == manifest["seq_len"] and meta["format"] == manifest["format"]
    written = json.loads((bundle / "manifest.json").read_text())
    assert written == json.loads(json.dumps(manifest))
    from yoco_deploy.manifest import BundleManifest

    read = BundleManifest.read(bundle)  # the reader gives back what the writer wrote
    assert read.to_dict() == written and read.extra == {}
    assert meta["manifest_sha256"] == onnx_metadata.manifest_digest(written)
    assert file_sha256(bundle / "model.onnx") == manifest["onnx_sha256"]
    assert (bundle / "model.onnx").stat().st_size / 1e6 == manifest["size_mb"]

    from transformers import AutoModelForSequenceClassification

    with pytest.raises(OSError):  # no PyTorch weights: refused, never a wrong random model
        AutoModelForSequenceClassification.from_pretrained(bundle)

    tokenizer = AutoTokenizer.from_pretrained(bundle)
    assert tokenizer.model_max_length == manifest["seq_len"]
    ids = tokenizer(" ".join(["good"] * 100), truncation=True)["input_ids"]
    assert len(ids) == manifest["seq_len"]
    from tokenizers import Tokenizer

    plain = Tokenizer.from_file(str(bundle / "tokenizer.json"))  # no truncation asked for
    assert len(plain.encode(" ".join(["good"] * 100)).ids) == manifest["seq_len"]


WITHOUT_TORCH = """
import json, sys
class Block:  # the API must not need torch or transformers
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers"):
            raise ModuleNotFoundError("blocked: " + name)
sys.meta_path.insert(0, Block())
from dataclasses import asdict
from yoco_deploy import load_bundle
bundle = load_bundle(sys.argv[1])
from yoco_deploy.runtime import SessionSpec
manifest = json.load(open(sys.argv[1] + "/manifest.json"))
assert bundle.session_spec == SessionSpec.from_dict(manifest["session"]), bundle.session_spec
print(json.dumps([asdict(p) for p in bundle.classify(["good great film", "awful boring plot"])]))
"""


def test_unmeetable_measured_latency_ships_nothing(net, tmp_path, monkeypatch):
    supernet, _ = net
    target = Target("tiny-cpu", {"latency": 1e-4})  # no model runs in 0.1 microseconds
    cm = cost_model(net, target)
    # suppose the predictor was wrong: every cost model (corrected ones too) says it fits
    monkeypatch.setattr(CostModel, "feasible", lambda self, arch: True)
    archs = supernet.super_bert.space.sampler(0).sample_many(2)
    from yoco_deploy.deploy.ship import ship_target

    with pytest.raises(BudgetError, match=r"meets its budgets on this device; the closest was"):
        ship_target(
            supernet.super_bert,
            supernet.tokenizer,
            supernet.data,
            cm,
            archs,
            tmp_path / "bundles",
            ShipSettings(seq_len=16, protocol=FAST),
            say=lambda s: None,
        )
    assert not (tmp_path / "bundles").exists() or not any((tmp_path / "bundles").iterdir())


def test_latency_budget_needs_a_predictor(net, tmp_path):
    supernet, _ = net
    with pytest.raises(BudgetError, match="no latency predictor for device 'phone'"):
        cost_model(net, parse_target("phone:latency=5ms"))
    assert isinstance(CostModel(Target("x", {"params": 1e9}), supernet.super_bert.space), CostModel)


def _constant(supernet):
    """The same super-BERT with its classifier fixed on one class: a constant predictor."""
    import copy

    import torch

    from yoco_deploy.deploy.supernet import Supernet

    sb = copy.deepcopy(supernet.super_bert)
    with torch.no_grad():
        sb.model.classifier.weight.zero_()
        sb.model.classifier.bias.copy_(torch.tensor([0.0, 5.0]))
    return Supernet(sb, supernet.tokenizer, supernet.data, None, supernet.max_seq_len)


def _ship(supernet, cm, archs, out, **settings):
    from yoco_deploy.deploy.ship import ship_target

    return ship_target(
        supernet.super_bert,
        supernet.tokenizer,
        supernet.data,
        cm,
        archs,
        out,
        ShipSettings(seq_len=16, protocol=FAST, **settings),
        say=lambda s: None,
    )


def test_the_quality_gate_refuses_a_constant_predictor(net, tmp_path):
    from yoco_deploy.deploy.quality import QualityError
    from yoco_deploy.train.evaluation import majority_baseline

    supernet, _ = net
    constant = _constant(supernet)
    cm = cost_model(net, parse_target("tiny-cpu:params=3M"))
    archs = constant.super_bert.space.sampler(1).sample_many(2)
    baseline = majority_baseline(supernet.data.task, supernet.data.dev.labels)
    with pytest.raises(QualityError) as err:
        _ship(constant, cm, archs, tmp_path / "bundles")
    message = str(err.value)
    assert "clearly better than a constant predictor" in message
    assert f"the majority class scores {baseline:.3f}" in message
    assert "looser budget" in message and "--allow-weak" in message
    assert not (tmp_path / "bundles").exists() or not any((tmp_path / "bundles").iterdir())
    # --allow-weak ships it, and the manifest says so
    shipped = _ship(constant, cm, archs, tmp_path / "weak", allow_weak=True)
    quality = shipped.manifest.quality
    assert not quality["passed"] and "allow-weak" in quality["warning"]
    assert quality["majority_baseline"] == pytest.approx(baseline)


def test_the_floor_is_two_standard_errors_above_the_majority_class():
    import numpy as np

    from yoco_deploy.deploy.quality import QualityGate
    from yoco_deploy.train.data import get_task

    sst2 = get_task("sst2")
    labels = np.array([1] * 444 + [0] * 428)  # SST-2 dev: 872 sentences, 50.9% positive
    gate = QualityGate.for_split(sst2, labels, "accuracy")
    assert gate.baseline == pytest.approx(444 / 872)
    assert gate.floor == pytest.approx(0.5092 + 2 * np.sqrt(0.5092 * 0.4908 / 872), abs=1e-3)
    assert not gate.passes(0.509) and gate.passes(0.60)
    small = QualityGate.for_split(sst2, np.array([1, 0] * 5000), "accuracy")
    assert small.floor == pytest.approx(0.52)  # never less than 2 points
    mcc = QualityGate.for_split(get_task("cola"), np.array([1, 1, 0]), "mcc")
    assert (mcc.baseline, mcc.floor) == (0.0, 0.05)


def test_a_failed_write_keeps_the_previous_bundle_and_leaves_nothing_half_written(
    net, tmp_path, monkeypatch
):
    """A full disk mid-bundle (an injected ENOSPC while copying files) leaves the
    previous good bundle as it was and no partial one under any name."""
    import errno

    from yoco_deploy.deploy import bundle_files

    supernet, _ = net
    cm = cost_model(net, parse_target("tiny-cpu:params=3M"))
    arch = [supernet.super_bert.space.min_arch()]
    first = _ship(supernet, cm, arch, tmp_path / "bundles", min_metric=0.0)

    def files(folder):  # the Triton repository's files included
        found = (f for f in folder.rglob("*") if f.is_file())
        return {str(f.relative_to(folder)): f.read_bytes() for f in found}

    before = files(first.path)
    write = bundle_files.write_text

    def full_disk(path, *args, **kwargs):  # the disk fills up after model.onnx is copied
        if str(path).endswith("config.json"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return write(path, *args, **kwargs)

    monkeypatch.setattr(bundle_files, "write_text", full_disk)
    with pytest.raises(OSError, match="No space left"):
        _ship(supernet, cm, arch, tmp_path / "bundles", min_metric=0.0)
    left = sorted(p.name for p in (tmp_path / "bundles").iterdir())
    assert left == [first.path.name]  # no staging folder, no second bundle
    assert files(first.path) == before


def _can_mount_tmpfs(tmp_path) -> bool:
    import shutil

    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(
        ["unshare", "-rm", "mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(tmp_path)],
        capture_output=True,
    )
    return probe.returncode == 0


FULL_DISK = """
set -u
mount -t tmpfs -o size=64m tmpfs "$MNT"
"$CLI" ship "$@" > first.log 2>&1; echo "first $?"
(cd "$MNT" && find . -type f | sort | xargs sha256sum) > before.txt
used=$(du -sk "$MNT" | cut -f1)
mount -o remount,size=$((used + 40))k tmpfs "$MNT"  # room for less than another bundle
"$CLI" ship "$@" > second.log 2>&1; echo "second $?"
(cd "$MNT" && find . -type f | sort | xargs sha256sum) > after.txt
(cd "$MNT" && find . | sort) > listing.txt
"""


@pytest.mark.slow  # two ships in a user namespace: the slow suite
def test_a_real_full_disk_during_ship_keeps_the_previous_bundle(tmp_path):
    """`ship` onto a size-limited tmpfs (mounted in a user namespace) that fills up while
    the second bundle is written: one error line, exit 1, the first bundle byte for byte
    as it was and no staging folder left."""
    from pathlib import Path

    if not _can_mount_tmpfs(tmp_path):
        pytest.skip("cannot mount a tmpfs here (needs unshare -rm); the injected test covers it")
    model_dir, data_dir = write_tiny_task(tmp_path, n_train=120, n_dev=40)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    arch = '{"layers": [{"heads": 2, "ffn": 24}, {"heads": 2, "ffn": 24}]}'
    args = [
        "--supernet", model_dir, "--task", "sst2", "--data-dir", data_dir,
        "-t", "dev:params=3M", "--arch", arch, "--bundles", mnt / "bundles",
        "--min-metric", "0", "--format", "fp32", "--threads", "1", "--seq-len", "16",
    ]  # fmt: skip
    env = {
        "PATH": "/usr/bin:/bin",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "MNT": str(mnt),
        "CLI": str(Path(sys.executable).parent / "yoco-deploy"),
    }
    out = subprocess.run(
        ["unshare", "-rm", "bash", "-c", FULL_DISK, "full-disk", *map(str, args)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    first_log = (tmp_path / "first.log").read_text()
    assert out.stdout.split() == ["first", "0", "second", "1"], (out, first_log)
    log = (tmp_path / "second.log").read_text().splitlines()
    errors = [line for line in log if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("error: No space left on device"), errors
    before, after = ((tmp_path / f).read_text() for f in ("before.txt", "after.txt"))
    assert "model.onnx" in before and "manifest.json" in before
    assert after == before  # the first bundle, summary and plot untouched
    listing = (tmp_path / "listing.txt").read_text()
    assert not any(part in listing for part in (".staging-", ".old-", ".tmp-")), listing


def test_the_session_is_recorded_from_profile_to_manifest(net, tmp_path):
    """profile -> predictor -> ship -> manifest: one SessionSpec, and ship refuses to
    time a bundle in another session than its predictor was profiled in."""
    from yoco_deploy.device.predictor import LatencyPredictor

    supernet, root = net
    profiled = json.loads((root / "profiles" / "tiny-cpu" / "device.json").read_text())
    predictor = LatencyPredictor.load(root / "predictors" / "tiny-cpu.json")
    spec = runtime.recorded_session(predictor.device)
    assert spec == runtime.SessionSpec(threads=1)  # what the fixture profiled with
    assert runtime.recorded_session(profiled["fingerprint"]) == spec
    cm = cost_model(net, parse_target("tiny-cpu:latency=100ms"))
    arch = [supernet.super_bert.space.min_arch()]
    shipped = _ship(supernet, cm, arch, tmp_path / "bundles", min_metric=0.0)
    assert runtime.SessionSpec.from_dict(shipped.manifest.session) == spec
    timing = shipped.manifest.timing
    assert timing["reference_ms"] > 0 and timing["calibrated_prediction_ms"] > 0
    with pytest.raises(BudgetError, match="profiled with cpu, 1 threads, spinning stop-after"):
        _ship(supernet, cm, arch, tmp_path / "b2", min_metric=0.0, session={"spinning": "off"})


def test_a_relative_budget_moves_with_the_calibrated_speed(net):
    """With a reference timed twice as slow today, predictions double and so does the
    millisecond value of latency=50%: a sub-BERT's feasibility does not change."""
    cm = cost_model(net, parse_target("tiny-cpu:latency=50%"))
    ref = cm.predictor.predict(cm.space.max_arch(), 1, 16).reference_ms
    slow = cm.recalibrated(2 * ref)
    assert slow.target.budgets["latency"] == pytest.approx(2 * cm.target.budgets["latency"], 0.01)
    archs = cm.space.sampler(3).sample_many(30)
    assert [cm.feasible(a) for a in archs] == [slow.feasible(a) for a in archs]
    a = archs[0]
    assert slow.costs(a)["latency"] == pytest.approx(2 * cm.costs(a)["latency"])
    # a correction moves predictions, not the share's milliseconds
    corrected = cm.recalibrated(ref, correction=1.5)
    assert corrected.target.budgets["latency"] == pytest.approx(cm.target.budgets["latency"], 0.01)
    assert corrected.costs(a)["latency"] == pytest.approx(1.5 * cm.costs(a)["latency"])


def test_ship_corrects_its_predictor_instead_of_giving_up(net, tmp_path, monkeypatch):
    """Models run slower than predicted while the reference does not (the predictor is
    off near the budget): the first candidate is measured over budget; ship corrects
    the cost model by what it measured, goes down to the corrected boundary, and ships."""
    from yoco_deploy.deploy import ship as ship_module

    from helpers import FakeBackend

    class SlowModels(FakeBackend):
        """The size-dependent part of every model but the reference is 30% slower."""

        def __init__(self, spec):
            def base_ms(path):
                slower = 1.0 if "reference" in str(path) else 1.3
                return 0.5 + slower * path.stat().st_size / 2e5

            super().__init__(base_ms)

    monkeypatch.setattr(ship_module.runtime, "OrtBackend", SlowModels)
    supernet, _ = net
    cm = cost_model(net, parse_target("tiny-cpu:latency=1000ms"))
    space = supernet.super_bert.space
    top = space.max_arch()
    from yoco_deploy.device.calibrate import build_reference

    ref_ms = FakeBackend().base_ms(build_reference(cm.predictor, tmp_path / "ref"))
    predicted = cm.recalibrated(ref_ms).costs(top)["latency"]
    budget = round(1.1 * predicted, 4)  # top fits by prediction, not as measured
    cm = cost_model(net, Target("tiny-cpu", {"latency": budget}))
    shipped = _ship(supernet, cm, [top], tmp_path / "bundles", min_metric=0.0)
    m = shipped.manifest.to_dict()
    assert shipped.rejected[0]["arch_id"] == top.arch_id
    assert "measured" in shipped.rejected[0]["why"]
    assert m["arch_id"] != top.arch_id
    assert m["measured_latency_ms"]["median"] <= budget
    assert 1.05 < m["timing"]["correction"] < 1.3


def test_a_slow_reference_timing_at_the_start_does_not_overrule_a_measurement(
    net, tmp_path, monkeypatch
):
    """The machine is 3x as slow while ship times the reference alone at the start,
    then back to normal. The top candidate, feasible as profiled, is timed rather than
    repaired away on that one timing: it fits as measured and ships."""
    from yoco_deploy.deploy import ship as ship_module
    from yoco_deploy.device.calibrate import build_reference

    from helpers import FakeBackend

    monkeypatch.setattr(ship_module.runtime, "OrtBackend", lambda spec: FakeBackend())
    start = ship_module._ShipRun.calibrate_now

    def slow_start(self):
        self.backend.drift = lambda call: 3.0
        start(self)
        self.backend.drift = lambda call: 1.0

    monkeypatch.setattr(ship_module._ShipRun, "calibrate_now", slow_start)
    supernet, _ = net
    cm = cost_model(net, parse_target("tiny-cpu:latency=1000ms"))
    top = supernet.super_bert.space.max_arch()
    ref_ms = FakeBackend().base_ms(build_reference(cm.predictor, tmp_path / "ref"))
    # room for the fake device's own error; the slow spell predicts twice the budget
    budget = round(1.4 * cm.recalibrated(ref_ms).costs(top)["latency"], 4)
    cm = cost_model(net, Target("tiny-cpu", {"latency": budget}))
    shipped = _ship(supernet, cm, [top], tmp_path / "bundles", min_metric=0.0)
    assert shipped.manifest.arch_id == top.arch_id and shipped.rejected == []
    assert shipped.manifest.measured_latency_ms.median <= budget


def test_a_super_bert_loaded_over_another_space_than_it_was_trained_is_refused(tmp_path):
    """Its theta and weights fit the recorded space only: a config that now gives another
    one (an edited space override, say) is named, not searched."""
    from yoco_deploy.deploy.supernet import load_supernet
    from yoco_deploy.model.loading import load_config
    from yoco_deploy.model.supernet_checkpoint import SupernetCheckpoint
    from yoco_deploy.space import SearchSpace
    from yoco_deploy.train.data import DataError

    model_dir, data_dir = write_tiny_task(tmp_path, n_train=40, n_dev=10)
    space = SearchSpace.from_config(load_config(str(model_dir)))
    record = SupernetCheckpoint("sst2", space.to_dict(), {}, 1, {"data_dir": str(data_dir)})
    record.write(model_dir)
    assert load_supernet(str(model_dir)).super_bert.space.same_shapes(space)
    narrower = {**space.to_dict(), "depth": list(space.depth_choices[:1])}
    SupernetCheckpoint("sst2", narrower, {}, 1, {"data_dir": str(data_dir)}).write(model_dir)
    with pytest.raises(DataError, match="trained over another search space"):
        load_supernet(str(model_dir))


def test_a_search_log_is_named_by_the_target_as_written_and_an_older_one_resumes(net, tmp_path):
    """``latency=80%`` resolves to other milliseconds as the machine's speed moves: the
    folder keeps the share (the pipeline's bundle folder has the same name), and a log
    an earlier version wrote under the resolved budget is resumed, not searched again."""
    supernet, root = net
    target = parse_target("tiny-cpu:latency=80%")
    ship = ShipSettings(seq_len=16)
    job = DeployJob((target,), ship=ship, predictors=root / "predictors", logs=tmp_path)
    (cm,) = job.cost_models(supernet)
    log = job.log_path(cm)
    assert log.parent.name == target.slug() == "tiny-cpu_latency_share-80pct"
    older = tmp_path / cm.target.slug() / log.name  # e.g. tiny-cpu_latency-0.91ms
    older.parent.mkdir()
    older.write_text("")
    assert cm.target.slug() != target.slug() and job.log_path(cm) == older


class _Jumpy:
    """A device where the reference runs in 1 ms and every candidate in 2 ms, except
    that the candidate's runs (not the reference's) are scaled by ``jump(round)`` in
    rounds of five: noise that pairing does not cancel."""

    def __init__(self, jump):
        self.jump, self.model_calls = jump, 0

    def load(self, path):
        return path

    def time_one(self, handle, feeds):
        if "reference" in str(handle):
            return 1.0
        self.model_calls += 1
        return 2.0 * self.jump((self.model_calls - 1) // 5)


def _ship_jumpy(net, tmp_path, monkeypatch, jump, budget_ms):
    from yoco_deploy.deploy import ship as ship_module

    monkeypatch.setattr(ship_module.runtime, "OrtBackend", lambda spec: _Jumpy(jump))
    supernet, _ = net
    cm = cost_model(net, Target("tiny-cpu", {"latency": budget_ms}))
    said: list[str] = []
    protocol = runtime.Protocol(warmup=0, min_runs=25, max_runs=100, chunk=5, decide_runs=200)
    shipped = ship_module.ship_target(
        supernet.super_bert, supernet.tokenizer, supernet.data, cm,
        [supernet.super_bert.space.max_arch()], tmp_path / "bundles",
        ShipSettings(seq_len=16, protocol=protocol, min_metric=0.0), say=said.append,
    )  # fmt: skip
    return shipped.manifest, said


def test_a_noisy_spell_is_measured_again_and_the_manifest_says_so(net, tmp_path, monkeypatch):
    """Four of the candidate's first eight rounds are 30% slower: ship times more rounds
    until they fall outside the median's interval, states the quiet latency (the ratio
    times the reference's median over the ship: the tiny predictor has no reference at
    the ship's shape), and records the rounds and the spread."""
    m, said = _ship_jumpy(
        net, tmp_path, monkeypatch, lambda r: 1.3 if r < 8 and r % 2 else 1.0, 1000.0
    )
    timing = m.timing
    assert timing["rounds"] > 5 and timing["spread"] <= 0.04 and timing["budget_clear"]
    assert timing["ratio"] == 2.0 and timing["ratio_interval"] == [2.0, 2.0]
    assert timing["reference_ms"] == 1.0 and m.measured_latency_ms.median == 2.0
    assert m.measured_latency_ms.p90 > 2.0  # the slow runs are in the candidate's spread
    assert not any("unsettled" in line for line in said)
    card = (tmp_path / "bundles" / m.name / "README.md").read_text()
    assert f"in {timing['rounds']} rounds; 95% interval 2.000-2.000 ms" in card


def test_a_budget_the_noise_cannot_settle_is_measured_to_the_bound_and_marked(
    net, tmp_path, monkeypatch
):
    """The candidate's rounds alternate 3% under and over its 2 ms, forever, against a
    budget of 2.02 ms: the interval always straddles the budget, so ship measures up to
    the protocol's bound, lets the median decide, warns, and says so in the manifest."""
    m, said = _ship_jumpy(net, tmp_path, monkeypatch, lambda r: 1.03 if r % 2 else 0.97, 2.02)
    timing = m.timing
    assert timing["rounds"] == 40 and timing["budget_clear"] is False
    lo, hi = timing["interval_ms"]
    assert lo < 2.02 < hi and m.measured_latency_ms.median == pytest.approx(2.0)
    assert any("leaves the budget unsettled; the median decides" in line for line in said)
    card = (tmp_path / "bundles" / m.name / "README.md").read_text()
    assert "the budget was not settled by it" in card


class _Swung:
    """A device at ``speed``: the reference runs in ``speed`` ms, every candidate in twice
    that (the machine's speed moves both; their ratio stays 2)."""

    def __init__(self, speed):
        self.speed = speed

    def load(self, path):
        return path

    def time_one(self, handle, feeds):
        return self.speed * (1.0 if "reference" in str(handle) else 2.0)


def test_bundles_of_one_device_are_stated_at_its_profiled_speed(net, tmp_path, monkeypatch):
    """Two ships while the machine runs at two speeds 30% apart: stated at the speed the
    device was profiled at, both manifests say the same latency for the same measured
    ratio (stated at each ship's own speed they would be 30% apart), and each records the
    speed of its own ship."""
    from dataclasses import replace

    from yoco_deploy.deploy import ship as ship_module

    supernet, _ = net
    base = cost_model(net, Target("tiny-cpu", {"latency": 1000.0}))
    reference = base.predictor.reference
    profiled = {**reference, "median_ms": {**reference["median_ms"], "1x16": 1.5}}
    predictor = replace(base.predictor, reference=profiled)
    cm = CostModel(base.requested, base.space, predictor, 16, 1, fmt=base.fmt)
    protocol = runtime.Protocol(warmup=0, min_runs=25, max_runs=100, chunk=5)
    for speed in (1.0, 1.3):
        monkeypatch.setattr(ship_module.runtime, "OrtBackend", lambda spec, s=speed: _Swung(s))
        m = ship_module.ship_target(
            supernet.super_bert, supernet.tokenizer, supernet.data, cm,
            [supernet.super_bert.space.max_arch()], tmp_path / f"bundles-{speed}",
            ShipSettings(seq_len=16, protocol=protocol, min_metric=0.0), say=lambda s: None,
        ).manifest  # fmt: skip
        timing = m.timing
        assert timing["stated_at"] == "profile" and timing["reference_ms"] == 1.5
        assert timing["ratio"] == pytest.approx(2.0)
        assert m.measured_latency_ms.median == pytest.approx(3.0)
        assert timing["reference_today_ms"] == pytest.approx(speed)


class _Tailed:
    """The reference runs in 1 ms, every candidate in 2 ms, and one run in 25 of each
    takes three times as long: a p99 well above the median."""

    def __init__(self):
        self.calls = 0

    def load(self, path):
        return path

    def time_one(self, handle, feeds):
        self.calls += 1
        base = 1.0 if "reference" in str(handle) else 2.0
        return base * (3.0 if self.calls % 25 == 0 else 1.0)


def test_a_percentile_target_is_timed_and_stated_at_its_statistic(net, tmp_path, monkeypatch):
    """``@p=99``: ship times enough runs for a p99, states the candidate's p99 (the median
    ratio at the ship's speed, times its own runs' tail), decides the budget on it, and
    the manifest says which statistic, the median beside it and the throughput."""
    from yoco_deploy.deploy import ship as ship_module

    monkeypatch.setattr(ship_module.runtime, "OrtBackend", lambda spec: _Tailed())
    supernet, _ = net
    protocol = runtime.Protocol(warmup=0, min_runs=25, max_runs=100, chunk=5)
    settings = ShipSettings(seq_len=16, protocol=protocol, min_metric=0.0)

    def ship(text, folder):
        cm = cost_model(net, parse_target(text))
        return ship_module.ship_target(
            supernet.super_bert, supernet.tokenizer, supernet.data, cm,
            [supernet.super_bert.space.max_arch()], tmp_path / folder, settings,
            say=lambda s: None,
        ).manifest  # fmt: skip

    m = ship("tiny-cpu:latency=1000ms@seq=24,p=99", "p99")
    lat = m.measured_latency_ms
    assert m.statistic == "p99" and m.seq_len == 24 and m.target.endswith("@seq=24,p=99")
    assert lat.runs >= 368 and lat.median == pytest.approx(2.0)
    assert lat.percentile == pytest.approx(6.0, rel=0.05)  # its slow runs are its tail
    assert m.timing["interval_ms"][1] >= lat.percentile  # the p99's own interval, too
    assert m.throughput == pytest.approx(1000 / lat.median)
    median = ship("tiny-cpu:latency=3ms", "median").measured_latency_ms
    assert median.percentile is None and median.median == pytest.approx(2.0)
    # a budget between the median and the p99: met by the median, broken by the p99
    with pytest.raises(BudgetError):
        ship("tiny-cpu:latency=3ms@p=99", "p99-broken")


class _Outlier(_Tailed):
    """The same runs, and every ``every``-th run of a candidate (from its 100th) ten
    times as slow as the median: the p99 stays 3x the median; the upper end of its
    interval is 10x while it rests on a slow run."""

    def __init__(self, every: int = 200):
        super().__init__()
        self.every, self.own = every, {}

    def time_one(self, handle, feeds):
        ms = super().time_one(handle, feeds)
        if "reference" not in str(handle):
            self.own[handle] = self.own.get(handle, 0) + 1
            if self.own[handle] % self.every == 100 % self.every:
                return 20.0
        return ms


def test_a_tail_budget_is_held_against_the_upper_end_not_the_point(net, tmp_path, monkeypatch):
    from yoco_deploy.deploy import ship as ship_module

    monkeypatch.setattr(ship_module.runtime, "OrtBackend", lambda spec: _Outlier())
    supernet, _ = net
    protocol = runtime.Protocol(warmup=0, min_runs=25, max_runs=100, chunk=5)
    settings = ShipSettings(seq_len=16, protocol=protocol, min_metric=0.0, polish=None)

    def ship(text, folder):
        return ship_module.ship_target(
            supernet.super_bert, supernet.tokenizer, supernet.data,
            cost_model(net, parse_target(text)), [supernet.super_bert.space.max_arch()],
            tmp_path / folder, settings, say=lambda s: None,
        ).manifest  # fmt: skip

    with pytest.raises(BudgetError):  # the point p99 (6 ms) fits 10 ms; its upper end does not
        ship("tiny-cpu:latency=10ms@p=99", "tight")
    m = ship("tiny-cpu:latency=25ms@p=99", "roomy")
    assert m.measured_latency_ms.percentile == pytest.approx(6.0, rel=0.05)
    assert m.timing["interval_ms"][1] == pytest.approx(20.0, rel=0.05)
    assert m.timing["runs"] == 370  # settled: no more runs than the upper end needs


def test_one_slow_run_does_not_decide_a_tail_budget(net, tmp_path, monkeypatch):
    from yoco_deploy.deploy import ship as ship_module

    # one slow run in all: unsettled at 368 runs (the upper end is that run), settled
    # under the budget once twice as many put the upper end on the third-slowest
    monkeypatch.setattr(ship_module.runtime, "OrtBackend", lambda spec: _Outlier(every=10**6))
    supernet, _ = net
    protocol = runtime.Protocol(warmup=0, min_runs=25, max_runs=100, chunk=5)
    settings = ShipSettings(seq_len=16, protocol=protocol, min_metric=0.0, polish=None)
    m = ship_module.ship_target(
        supernet.super_bert, supernet.tokenizer, supernet.data,
        cost_model(net, parse_target("tiny-cpu:latency=10ms@p=99")),
        [supernet.super_bert.space.max_arch()], tmp_path / "one", settings, say=lambda s: None,
    ).manifest  # fmt: skip
    assert m.timing["runs"] > 370 and m.timing["budget_clear"]
    assert m.timing["interval_ms"][1] < 10.0


def test_a_target_shape_outside_the_profiled_one_is_refused_naming_the_range(net):
    with pytest.raises(BudgetError, match=r"outside the shapes .* \(batch 1, seq_len 8 to 32\)"):
        cost_model(net, parse_target("tiny-cpu:latency=5ms@batch=4"))
    assert cost_model(net, parse_target("tiny-cpu:params=90M@batch=4")).batch == 4


def test_a_percentiles_interval_covers_it_and_needs_enough_runs():
    """The p99's 95% interval from order statistics holds the true p99 in about 95% of
    draws, whatever the distribution; too few runs leave it without an upper end, and a
    percentile target times enough runs for one."""
    import math

    import numpy as np

    from yoco_deploy.deploy.ship_timing import runs_for, tail_interval

    rng = np.random.default_rng(0)
    true_p99 = math.log(100)  # of exponential(1) runs
    hits = 0
    for _ in range(400):
        runs = rng.exponential(size=368)
        _, lo, hi = tail_interval(runs, 99)
        hits += lo * np.median(runs) <= true_p99 <= hi * np.median(runs)
    assert 0.9 <= hits / 400 <= 0.99
    assert tail_interval(rng.exponential(size=368), 99)[2] < math.inf
    assert tail_interval(rng.exponential(size=200), 99)[2] == math.inf
    assert tail_interval(rng.exponential(size=50), None) == (1.0, 1.0, 1.0)
    assert runs_for(runtime.Protocol(), 99).min_runs == 368
    assert runs_for(runtime.Protocol(), 95).min_runs == 72
    # an unsettled verdict goes on to twice the runs, where the upper end comes closer
    assert runs_for(runtime.Protocol(), 99).decide_runs == 736
    upper = {n: np.mean([tail_interval(rng.exponential(size=n), 99)[2] for _ in range(200)])
             for n in (368, 736)}  # fmt: skip
    assert upper[736] < upper[368] - 0.1
