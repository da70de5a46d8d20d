"""fit --prior: a new device's predictor from few measurements, another device's predictor
as its prior (recorded); a prior of another space or feature schema, or too few
measurements, is one error line."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from transformers import BertConfig

from yoco_deploy import runtime
from yoco_deploy.costs import arch_costs
from yoco_deploy.device.fit import fit_profile
from yoco_deploy.device.predictor import LatencyPredictor, PredictorError, latency_metrics
from yoco_deploy.device.profile_store import device_record, prepare_profile_dir
from yoco_deploy.device.profiling import ProfileSettings, refinement_status
from yoco_deploy.device.sample_design import SpaceFillingDesign
from yoco_deploy.space import SearchSpace
from yoco_deploy.util.hashing import file_sha256

from helpers import TINY, assert_one_line_error, run

SPACE = SearchSpace.from_config(BertConfig(**TINY))
SETTINGS = ProfileSettings(n=10, shapes=((1, 16),), session=runtime.SessionSpec(threads=1))
TOP = arch_costs(SPACE.max_arch(), SPACE.dims, seq_len=16).flops


def cpu_a(arch) -> float:
    """Latency relative to the full model: proportional to FLOPs, a small overhead."""
    return 0.1 + 0.9 * arch_costs(arch, SPACE.dims, seq_len=16).flops / TOP


def cpu_b(arch) -> float:
    """Another CPU: a heavy per-layer cost and cheap FLOPs (cpu_a's shape is wrong)."""
    return 0.02 + 0.2 * arch.depth + 0.15 * arch_costs(arch, SPACE.dims, seq_len=16).flops / TOP


def profile(folder, latency, n, seed=0, noise=0.02, exclude=()):
    """A profile as `profile` writes it: ``n`` sub-BERTs timed with ``noise`` (relative)."""
    archs = SpaceFillingDesign(SPACE, seed).sample(n, exclude=set(exclude))
    rng = np.random.default_rng(seed)
    fingerprint = runtime.device_fingerprint(SETTINGS.session)
    log = prepare_profile_dir(folder, device_record(folder.name, SPACE, SETTINGS, fingerprint, "t"))
    ref = {"kind": "reference", "key": runtime.job_key(runtime.REFERENCE_ID, 1, 16), "batch": 1,
           "seq_len": 16, "t": 0.0, "session": "s", "median_ms": 2.0}  # fmt: skip
    log.append(ref)
    for i, arch in enumerate(archs):
        rel = latency(arch) * (1 + noise * rng.standard_normal())
        log.append({"kind": "model", "key": runtime.job_key(arch.arch_id, 1, 16),
                    "arch_id": arch.arch_id, "arch": arch.to_dict(), "batch": 1, "seq_len": 16,
                    "remeasured": False, "t": float(i + 1), "session": "s",
                    "median_ms": 2 * rel, "p90_ms": 2 * rel, "cv": 0.0, "runs": 3, "ref_ms": 2.0,
                    "rel": rel})  # fmt: skip
    return archs


def within10(predictor: LatencyPredictor, latency, archs) -> float:
    measured = np.array([latency(a) for a in archs])
    predicted = predictor.predict_relative(archs, 1, 16)
    return latency_metrics(measured, predicted)["within10"]


@pytest.fixture(scope="module")
def prior_file(tmp_path_factory):
    """cpu-a's predictor, fitted once from 40 sub-BERTs (read only by the tests)."""
    folder = tmp_path_factory.mktemp("prior")
    profile(folder / "cpu-a", cpu_a, 40, seed=1)
    return fit_profile(folder / "cpu-a", folder / "cpu-a.json", holdout=0, plot=False).path


def test_six_measurements_and_a_prior_predict_a_new_cpu(tmp_path, prior_file):
    seen = profile(tmp_path / "cpu-b", cpu_b, 6, seed=2)
    unseen = SpaceFillingDesign(SPACE, 3).sample(40, exclude={a.arch_id for a in seen})
    adapted = fit_profile(tmp_path / "cpu-b", tmp_path / "b.json", holdout=0, plot=False,
                          prior=prior_file).predictor  # fmt: skip
    prior = LatencyPredictor.load(prior_file)
    # the prior's shape is wrong for this CPU: as it is it misses; adapted, it holds
    assert within10(prior, cpu_b, unseen) < 0.5
    assert within10(adapted, cpu_b, unseen) >= 0.95
    assert adapted.model["type"] == "prior" and adapted.model["ridge"] not in ("as-is", 0)
    assert adapted.metrics["selection"]["prior"]["variant"].startswith("prior + ridge")
    # recorded, and the saved file predicts as the object did
    on_disk = LatencyPredictor.load(tmp_path / "b.json")
    assert on_disk.prior["sha256"] == file_sha256(prior_file)
    assert on_disk.prior["device"] == "cpu-a"
    assert json.loads((tmp_path / "b.json").read_text())["prior"]["path"] == str(prior_file)
    assert np.allclose(on_disk.predict_relative(unseen, 1, 16),
                       adapted.predict_relative(unseen, 1, 16))  # fmt: skip


def test_from_ten_measurements_the_models_without_a_prior_compete(tmp_path, prior_file):
    """Whatever cross-validates best is kept: here cpu_b is linear in the features, so
    a linear model from scratch fits it as well as the adapted prior."""
    seen = profile(tmp_path / "cpu-b", cpu_b, 10, seed=2)
    unseen = SpaceFillingDesign(SPACE, 3).sample(40, exclude={a.arch_id for a in seen})
    fitted = fit_profile(tmp_path / "cpu-b", tmp_path / "b.json", holdout=0, plot=False,
                         prior=prior_file).predictor  # fmt: skip
    selection = fitted.metrics["selection"]
    assert {"prior as-is", "prior scaled", "linear", "gbrt", "flops"} <= set(selection)
    best = min(v["mape"] for k, v in selection.items() if k != "prior")
    assert selection[fitted.model["type"]]["mape"] == best
    assert within10(fitted, cpu_b, unseen) >= 0.95 and fitted.prior["device"] == "cpu-a"


def test_five_measurements_are_enough_four_are_not(tmp_path, prior_file):
    profile(tmp_path / "b5", cpu_b, 5, seed=2)
    result = run("fit", "--profile", tmp_path / "b5", "--prior", prior_file, "--holdout", 0,
                 "--out", tmp_path / "b5.json")  # fmt: skip
    assert result.exit_code == 0, result.output
    profile(tmp_path / "b4", cpu_b, 4, seed=2)
    refused = run("fit", "--profile", tmp_path / "b4", "--prior", prior_file, "--holdout", 0,
                  "--out", tmp_path / "b4.json")  # fmt: skip
    assert_one_line_error(refused, "only 4 measurements: a predictor adapted from a prior needs")
    assert not (tmp_path / "b4.json").exists()


def test_a_prior_of_another_space_or_feature_schema_is_one_error_line(tmp_path, prior_file):
    profile(tmp_path / "cpu-b", cpu_b, 10, seed=2)
    data = json.loads(prior_file.read_text())
    prior = LatencyPredictor.load(prior_file)  # saved again over another space, signed
    other = replace(prior, space={**prior.space, "ffn": [24, 48]}).save(tmp_path / "other.json")
    refused = run("fit", "--profile", tmp_path / "cpu-b", "--prior", other,
                  "--out", tmp_path / "x.json")  # fmt: skip
    assert_one_line_error(refused, "was fitted for another search space")
    schema = tmp_path / "old-features.json"
    schema.write_text(json.dumps({**data, "feature_schema_version": 0}))
    refused = run("fit", "--profile", tmp_path / "cpu-b", "--prior", schema,
                  "--out", tmp_path / "x.json")  # fmt: skip
    assert_one_line_error(refused, "uses feature schema 0")
    assert not (tmp_path / "x.json").exists()


def test_profile_until_judges_the_adapted_predictor(tmp_path, prior_file):
    """profile --prior --until: after a round of six sub-BERTs on a new device, the
    predictor adapted from another device's is judged (too few rows to fit one without
    it), and it is already good enough to stop."""
    profile(tmp_path / "cpu-b", cpu_b, 6, seed=2)
    prior = LatencyPredictor.load(prior_file).model
    status = refinement_status(tmp_path / "cpu-b", ("mape", 0.05), prior)
    assert status["met"] and status["model"] == "prior"
    with pytest.raises(PredictorError, match="only 6 measurements"):
        refinement_status(tmp_path / "cpu-b", ("mape", 0.05))
    refused = run("profile", "--model", "x", "--device", "d", "--prior", prior_file)
    assert_one_line_error(refused, "--prior judges when --until is met; add --until")
