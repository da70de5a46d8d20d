"""One predictor over a grid of batches and sequence lengths: one unit for every shape,
answers between profiled shapes, its accuracy on shapes left out, refusal outside."""

import pytest
from transformers import BertConfig

from yoco_deploy import runtime
from yoco_deploy.arch import Arch
from yoco_deploy.device.fit import fit_profile
from yoco_deploy.device.predictor import PredictorError
from yoco_deploy.device.profile_store import load_training_data, reference_median
from yoco_deploy.device.profiling import ProfileSettings, profile_device
from yoco_deploy.space import SearchSpace

from helpers import TINY, FakeBackend

FAST = runtime.Protocol(warmup=1, min_runs=3, max_runs=6, chunk=3, ref_every=5)


class ShapedBackend(FakeBackend):
    """Latency = a fixed overhead + work proportional to the model's size and the tokens."""

    def time_one(self, handle, feeds):
        self.calls += 1
        return self.truth(handle.stat().st_size, *feeds["input_ids"].shape)

    @staticmethod
    def truth(size: int, batch: int, seq: int) -> float:
        return 0.3 + 0.05 * batch + size / 2e5 * batch * seq / 16


def _profile(folder, shapes, n=12):
    space = SearchSpace.from_config(BertConfig(**TINY))
    settings = ProfileSettings(
        n=n, shapes=shapes, protocol=FAST, session=runtime.SessionSpec(threads=1)
    )
    profile_device(space, folder, "grid", settings, "tiny", progress=lambda *a: None,
                   backend=ShapedBackend())  # fmt: skip
    return space


GRID = ((1, 16), (2, 16), (4, 16), (1, 32), (4, 32))


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    folder = tmp_path_factory.mktemp("grid") / "grid"
    space = _profile(folder, GRID)
    fitted = fit_profile(folder, folder.with_suffix(".json"), holdout=0, plot=False)
    return folder, space, fitted.predictor


def test_every_shape_is_counted_in_units_of_the_reference_at_the_base_shape(grid):
    folder, _, predictor = grid
    data, _ = load_training_data(folder)
    medians = reference_median(folder)
    assert predictor.reference["base_shape"] == "1x16" == next(iter(medians))
    # rel * ref_ms is still the latency beside the reference, whatever the shape's unit
    for rel, ref, ms in zip(data.rel, data.ref_ms, data.ms, strict=True):
        assert rel * ref == pytest.approx(ms, rel=0.3)
    at = {(a.arch_id, s): r for a, s, r in zip(data.archs, data.shapes, data.rel, strict=True)}
    for arch in {a.arch_id for a in data.archs}:  # 8x the tokens: not each shape's own ratio
        assert at[arch, (4, 32)] > 4 * at[arch, (1, 16)]


def test_shapes_left_out_are_scored_and_recorded(grid):
    _, _, predictor = grid
    unseen = predictor.metrics["unseen_shapes"]
    assert unseen["shapes"] == ["2x16"]  # between two batches at its length
    assert unseen["n"] == 12 and unseen["within10"] >= 0.9
    # the model kind is chosen by how it answers there, not by random folds
    chosen = predictor.metrics["selection_unseen_shapes"]
    assert predictor.metrics["chosen_by"] == "unseen shapes" and set(chosen) == {
        "linear",
        "gbrt",
        "flops",
    }
    assert predictor.model["type"] == min(chosen, key=lambda k: chosen[k]["mape"])


def test_a_shape_between_profiled_ones_is_predicted_and_flagged(grid):
    folder, space, predictor = grid
    arch = space.max_arch()
    on_grid = predictor.predict(arch, 4, 32)
    between = predictor.predict(arch, 3, 24)
    assert not on_grid.extrapolated and between.extrapolated
    assert predictor.predict(arch, 1, 16).latency_ms < between.latency_ms < on_grid.latency_ms * 2
    # the reference at an unprofiled shape is predicted; at a profiled one, its median
    assert predictor.reference_at(4, 32) == reference_median(folder)["4x32"]
    assert 0 < predictor.reference_at(3, 24) < predictor.reference_at(4, 32)
    # calibrated at a shape: the reference timed there today sets the speed
    twice = predictor.predict(arch, 3, 24, reference_ms=2 * predictor.reference_at(3, 24))
    assert twice.latency_ms == pytest.approx(2 * between.latency_ms)


def test_a_shape_outside_the_grid_is_refused_naming_the_range(grid):
    _, _, predictor = grid
    with pytest.raises(PredictorError, match=r"batch 1 to 4, seq_len 16 to 32"):
        predictor.check_shape(8, 16)


def test_a_grid_with_no_shape_between_others_says_so(tmp_path):
    folder = tmp_path / "corners"
    _profile(folder, ((1, 16), (4, 16), (1, 32), (4, 32)), n=10)
    predictor = fit_profile(folder, tmp_path / "c.json", holdout=0, plot=False).predictor
    assert predictor.metrics["unseen_shapes"]["shapes"] == []
    assert "3 batches" in predictor.metrics["unseen_shapes"]["note"]


def test_one_shape_predictors_predict_as_before(tmp_path):
    """A single shape is its own base: predictions are the ratio times its median."""
    folder = tmp_path / "one"
    space = _profile(folder, ((1, 16),), n=10)
    predictor = fit_profile(folder, tmp_path / "one.json", holdout=0, plot=False).predictor
    arch = Arch.uniform(2, 2, 24)
    rel = predictor.predict_relative([arch], 1, 16)[0]
    assert predictor.predict(arch, 1, 16).latency_ms == pytest.approx(
        rel * reference_median(folder)["1x16"]
    )
    assert predictor.base == ("1x16", reference_median(folder)["1x16"])
    assert space.contains(arch)


def test_a_profile_extended_to_a_new_shape_measures_its_sub_berts_there_too(tmp_path):
    import json

    from yoco_deploy.device.profile_store import MEASUREMENTS

    folder = tmp_path / "grown"
    _profile(folder, ((1, 16),), n=10)
    _profile(folder, ((1, 16), (4, 16)), n=10)
    rows = [json.loads(x) for x in (folder / MEASUREMENTS).read_text().splitlines()]
    models = [r for r in rows if r["kind"] == "model"]
    by_shape = {(b, s): {r["arch_id"] for r in models if (r["batch"], r["seq_len"]) == (b, s)}
                for b, s in ((1, 16), (4, 16))}  # fmt: skip
    assert len(by_shape[1, 16]) == 10 and by_shape[4, 16] == by_shape[1, 16]
    assert len(models) == 20  # nothing measured twice
    device = json.loads((folder / "device.json").read_text())
    assert device["shapes"] == [[1, 16], [4, 16]]
