import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from transformers import BertConfig

from yoco_deploy import runtime
from yoco_deploy.device.profile_store import (
    MEASUREMENTS,
    ProfileError,
    load_training_data,
    reference_arch,
)
from yoco_deploy.device.profiling import ProfileSettings, profile_device
from yoco_deploy.device.sample_design import SpaceFillingDesign
from yoco_deploy.space import SearchSpace

from helpers import TINY, FakeBackend

FAST = runtime.Protocol(warmup=1, min_runs=3, max_runs=6, chunk=3, ref_every=4)


@pytest.fixture
def space():
    return SearchSpace.from_config(BertConfig(**TINY))


def test_design_starts_with_min_and_max_and_spreads_sizes(space):
    archs = SpaceFillingDesign(space, seed=0).sample(40)
    assert archs[0] == space.min_arch() and archs[1] == space.max_arch()
    assert len({a.arch_id for a in archs}) == 40
    assert {a.depth for a in archs} == set(space.depth_choices)
    assert SpaceFillingDesign(space, seed=0).sample(40) == archs  # seeded


def test_design_spreads_mean_widths_wider_than_uniform_sampling():
    base = SearchSpace.from_config(BertConfig())  # 12 layers: uniform piles up in the middle
    design = SpaceFillingDesign(base, seed=0).sample(100)[2:]
    uniform = base.sampler(0).sample_many(98)
    for attr in ("ffn", "heads"):
        spread = np.std([np.mean(getattr(a, attr)) for a in design])
        assert spread > 1.5 * np.std([np.mean(getattr(a, attr)) for a in uniform]), attr


def test_design_excludes_ids(space):
    first = SpaceFillingDesign(space, seed=0).sample(10)
    more = SpaceFillingDesign(space, seed=1).sample(10, exclude={a.arch_id for a in first})
    assert not {a.arch_id for a in first} & {a.arch_id for a in more}


def test_measure_stops_when_the_rounds_agree():
    backend = FakeBackend(base_ms=lambda h: 2.0)
    protocol = runtime.Protocol(warmup=2, min_runs=20, chunk=10)
    stats = runtime.measure(backend, "m", {}, protocol)
    assert stats.runs == 20 and stats.median_ms == 2.0 and stats.cv == 0.0
    noisy = FakeBackend(base_ms=lambda h: 2.0, drift=lambda call: 1 + 0.5 * (call % 7) / 7)
    capped = runtime.measure(noisy, "m", {}, runtime.Protocol(warmup=0, max_runs=30, chunk=10))
    assert capped.runs <= 30 and capped.cv > 0
    assert isinstance(stats, runtime.Latency) and stats.to_dict() == {
        "median_ms": 2.0,
        "p90_ms": 2.0,
        "cv": 0.0,
        "runs": 20,
        "rounds": 2,
        "spread": 0.0,
    }  # a row of measurements.jsonl: no reference, no ref_ms or rel


class JumpyModel(FakeBackend):
    """The model's runs (not the reference's) are 30% slower in every other round of
    five for its first ``spell`` runs: a neighbour that pairing does not cancel."""

    def __init__(self, spell: int):
        super().__init__(base_ms=lambda h: 1.0 if h == "ref" else 2.0)
        self.model_calls, self.spell = 0, spell

    def time_one(self, handle, feeds):
        ms = super().time_one(handle, feeds)
        if handle == "ref":
            return ms
        self.model_calls += 1
        jump = self.model_calls <= self.spell and ((self.model_calls - 1) // 5) % 2 == 1
        return ms * (1.3 if jump else 1.0)


def test_measure_goes_on_while_the_rounds_disagree():
    protocol = runtime.Protocol(warmup=0, min_runs=25, max_runs=100, chunk=5)
    quiet = runtime.measure(JumpyModel(spell=0), "m", {}, protocol, reference="ref")
    assert (quiet.rounds, quiet.rel, quiet.spread) == (5, 2.0, 0.0)
    noisy = runtime.measure(JumpyModel(spell=40), "m", {}, protocol, reference="ref")
    # four slow rounds of the first eight: more rounds until they fall outside the
    # median's interval; the ratio is the quiet one, and the interval says how sure
    assert noisy.rounds > 5 and noisy.runs <= protocol.max_runs
    assert noisy.rel == 2.0 and noisy.spread <= protocol.max_spread
    assert noisy.ref_ms == 1.0 and noisy.rel_lo == 2.0 and noisy.rel_hi == 2.0
    assert set(noisy.to_dict()) == {
        "median_ms", "p90_ms", "cv", "runs", "ref_ms", "rel", "rel_lo", "rel_hi", "rounds",
        "spread",
    }  # fmt: skip


def test_measure_goes_on_for_a_decision_it_cannot_settle():
    protocol = runtime.Protocol(warmup=0, min_runs=25, max_runs=50, chunk=5, decide_runs=80)
    backend = FakeBackend(base_ms=lambda h: 1.0 if h == "ref" else 2.0)
    settled = runtime.measure(backend, "m", {}, protocol, "ref", settled=lambda s: True)
    assert settled.runs == 25
    unsettled = runtime.measure(backend, "m", {}, protocol, "ref", settled=lambda s: False)
    assert unsettled.runs == 80  # bounded: the caller records the decision as unclear


def test_the_median_interval_is_the_order_statistics_the_binomial_allows():
    assert runtime.median_interval([3, 1, 2, 5, 4]) == (1, 5)  # 5 values: the range
    ten = list(range(10))
    assert runtime.median_interval(ten) == (1, 8)  # P(B(10) <= 1) = 1.1% <= 2.5%
    twenty = list(range(20))
    assert runtime.median_interval(twenty) == (5, 14)  # P(B(20) <= 5) = 2.1%
    assert runtime.median_interval([100.0] + [1.0] * 19) == (1.0, 1.0)  # one outlier: nothing


def test_profile_writes_device_and_rows(space, tmp_path):
    out = tmp_path / "dev"
    settings = ProfileSettings(n=6, protocol=FAST, session=runtime.SessionSpec(threads=1))
    result = profile_device(
        space, out, "dev", settings, "tiny", progress=lambda *a: None, backend=FakeBackend()
    )
    assert result.measured == 6
    device = json.loads((out / "device.json").read_text())
    assert device["space"] == space.shape_dict() and device["format"] == "int8"
    assert device["fingerprint"]["threads"] == 1 and "onnxruntime" in device["fingerprint"]
    assert device["reference"]["arch"] == reference_arch(space).to_dict()
    rows = [json.loads(line) for line in (out / MEASUREMENTS).read_text().splitlines()]
    models = [r for r in rows if r["kind"] == "model"]
    assert len(models) == 6 and all(r["rel"] == r["median_ms"] / r["ref_ms"] for r in models)
    assert sum(r["kind"] == "reference" for r in rows) >= 2  # before and after
    # rerunning skips everything
    again = profile_device(
        space, out, "dev", settings, "tiny", progress=lambda *a: None, backend=FakeBackend()
    )
    assert again.rows_written == 0


def test_a_larger_n_extends_a_profile_to_n_not_by_another_design(space, tmp_path):
    """`profile --n 4` then `--n 6` into the same folder: 6 sub-BERTs, the first 4 kept
    (a design of 6 is another Latin hypercube; taking it whole gave 8 here)."""
    out = tmp_path / "dev"
    quiet = {"progress": lambda *a: None, "backend": FakeBackend()}
    four = ProfileSettings(n=4, protocol=FAST, session=runtime.SessionSpec(threads=1))
    profile_device(space, out, "dev", four, "tiny", **quiet)
    first = {r["arch_id"] for r in runtime.MeasurementLog(out / MEASUREMENTS).latest().values()}
    six = ProfileSettings(n=6, protocol=FAST, session=runtime.SessionSpec(threads=1))
    result = profile_device(space, out, "dev", six, "tiny", **quiet)
    ids = {r["arch_id"] for r in runtime.MeasurementLog(out / MEASUREMENTS).latest().values()}
    assert result.measured == 6 and len(ids) == 6 and first <= ids


def test_drift_remeasures_the_stretch(space, tmp_path):
    # the machine gets 30% slower after 40 timing calls
    backend = FakeBackend(drift=lambda call: 1.0 if call < 40 else 1.3)
    settings = ProfileSettings(n=8, protocol=FAST, session=runtime.SessionSpec(threads=1))
    profile_device(
        space, tmp_path / "d", "d", settings, "tiny", progress=lambda *a: None, backend=backend
    )
    log = runtime.MeasurementLog(tmp_path / "d" / MEASUREMENTS)
    assert any(r.get("remeasured") for r in log.rows)
    # after re-measurement, relative latency is the same whatever the drift
    latest = log.latest()
    data, _ = load_training_data(tmp_path / "d")
    assert len(latest) == 8 and len(data.rel) == 8


def test_truncated_measurements_are_a_clear_error_and_untouched(space, tmp_path):
    out = tmp_path / "dev"
    settings = ProfileSettings(n=4, protocol=FAST, session=runtime.SessionSpec(threads=1))
    profile_device(
        space, out, "dev", settings, "tiny", progress=lambda *a: None, backend=FakeBackend()
    )
    file = out / MEASUREMENTS
    cut = file.read_bytes()[:-25]
    file.write_bytes(cut)
    with pytest.raises(ProfileError, match="is cut off"):
        profile_device(
            space,
            out,
            "dev",
            ProfileSettings(n=6, protocol=FAST, session=runtime.SessionSpec(threads=1)),
            "tiny",
            progress=lambda *a: None,
            backend=FakeBackend(),
        )
    assert file.read_bytes() == cut
    with pytest.raises(ProfileError, match="line"):
        load_training_data(out)
    # --repair sets the torn row aside (backup kept) and resumes
    result = profile_device(
        space,
        out,
        "dev",
        ProfileSettings(n=4, protocol=FAST, session=runtime.SessionSpec(threads=1)),
        "tiny",
        progress=lambda *a: None,
        repair=True,
        backend=FakeBackend(),
    )
    assert result.measured == 4
    assert (
        list(out.glob("measurements.jsonl.bak-*"))
        and (out / "measurements.jsonl.rejected").exists()
    )


def test_profile_of_another_space_is_refused(space, tmp_path):
    out = tmp_path / "dev"
    settings = ProfileSettings(n=3, protocol=FAST, session=runtime.SessionSpec(threads=1))
    profile_device(
        space, out, "dev", settings, "tiny", progress=lambda *a: None, backend=FakeBackend()
    )
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    other = space.with_overrides({"ffn": [48, 96]})
    with pytest.raises(ProfileError, match="search space differs"):
        profile_device(
            other, out, "dev", settings, "tiny", progress=lambda *a: None, backend=FakeBackend()
        )
    with pytest.raises(ProfileError, match="threads"):
        profile_device(
            space,
            out,
            "dev",
            ProfileSettings(n=3, protocol=FAST, session=runtime.SessionSpec(threads=2)),
            "tiny",
            progress=lambda *a: None,
            backend=FakeBackend(),
        )
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_unavailable_provider_is_a_clear_error():
    with pytest.raises(runtime.RunnerError, match="not available"):
        runtime.resolve_provider("tensorrt")


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_killed_profiler_resumes_without_loss_or_duplicates(tiny_dir, tmp_path):
    profiles = tmp_path / "profiles"
    cmd = [
        str(Path_exe()),
        "profile",
        "-m",
        str(tiny_dir),
        "--device",
        "k",
        "--n",
        "10",
        "--threads",
        "1",
        "--profiles-dir",
        str(profiles),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    file = profiles / "k" / MEASUREMENTS
    deadline = time.time() + 120
    while time.time() < deadline:
        if file.exists() and sum(r["kind"] == "model" for r in _rows(file)) >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = file.read_bytes()
    models_before = {r["key"] for r in _rows(file) if r["kind"] == "model"}
    assert 3 <= len(models_before) < 10, "the kill should land mid-run"
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    after = file.read_bytes()
    assert after.startswith(before)  # nothing lost or rewritten
    rows = [r for r in _rows(file) if r["kind"] == "model"]
    first_measurements = [r["key"] for r in rows if not r["remeasured"]]
    assert len(first_measurements) == len(set(first_measurements)) == 10  # no duplicates
    assert models_before <= set(first_measurements)


def Path_exe():
    from pathlib import Path

    return Path(sys.executable).with_name("yoco-deploy")


def test_active_refinement_stops_at_the_target(space, tmp_path):
    settings = ProfileSettings(n=60, protocol=FAST, session=runtime.SessionSpec(threads=1))
    result = profile_device(
        space,
        tmp_path / "r",
        "r",
        settings,
        "tiny",
        progress=lambda *a: None,
        until=("within10", 0.9),
        first_round=12,
        step=6,
        backend=FakeBackend(),
    )
    assert result.rounds and result.rounds[-1]["met"]
    assert result.measured < 60  # stopped before the cap
    assert all(r["metric"] == "within10" for r in result.rounds)


def test_active_refinement_respects_the_cap(space, tmp_path):
    noisy = FakeBackend(drift=lambda call: 1 + 0.3 * ((call * 7919) % 13) / 13)
    settings = ProfileSettings(n=14, protocol=FAST, session=runtime.SessionSpec(threads=1))
    result = profile_device(
        space,
        tmp_path / "c",
        "c",
        settings,
        "tiny",
        progress=lambda *a: None,
        until=("within5", 1.01),
        near_ms=(1.0,),
        first_round=10,
        step=3,
        backend=noisy,
    )
    assert result.measured == 14 and not result.rounds[-1]["met"]


@pytest.mark.slow  # spawns two processes that import torch
def test_a_stretch_exported_by_worker_processes_is_what_one_process_exports(space, tmp_path):
    """The profiler's parallel exports (spawned workers, each with the same seeded random
    super-BERT): the same graphs as exported here, and only the timed file is kept."""
    from yoco_deploy.device.profiling import ArtifactBuilder

    archs = SpaceFillingDesign(space, seed=0).sample(3)
    # exported, not cut from the max sub-BERT's graph (tests/test_slice_graph.py)
    serial = ArtifactBuilder(space, "int8", tmp_path / "serial", workers=1, slicing=False)
    serial.prepare(archs)
    parallel = ArtifactBuilder(space, "int8", tmp_path / "parallel", workers=2, slicing=False)
    parallel.worth_workers = lambda: True  # as if exports were slow enough for workers
    try:
        parallel.prepare(archs)
    finally:
        parallel.close()
    for arch in archs:
        a, b = serial.built[arch.arch_id], parallel.built[arch.arch_id]
        assert [p.name for p in b.parent.iterdir()] == [b.name]
        assert a.name == b.name and a.read_bytes() == b.read_bytes()
