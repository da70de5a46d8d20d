import numpy as np
import pytest
from transformers import BertConfig

from yoco_deploy.space import INACTIVE, SearchSpace
from yoco_deploy.train.sng import CategoricalSNG, SubSpace, ranking_utility

SPACE = SearchSpace.from_config(BertConfig())


def test_ranking_utility():
    assert ranking_utility(np.array([0.3, 0.1])).tolist() == [-1.0, 1.0]
    assert ranking_utility(np.array([0.2, 0.2])).tolist() == [0.0, 0.0]  # ties share
    u = ranking_utility(np.array([4.0, 1.0, 3.0, 2.0, 5.0, 0.0, 6.0, 7.0]))
    assert u.tolist() == [0, 0.5, 0, 0, 0, 0.5, -0.5, -0.5]


def test_update_moves_towards_the_better_candidate():
    sng = CategoricalSNG(SPACE, delta=0.5, seed=0)
    good, bad = sng.sample_codes(), sng.sample_codes()
    while bad[0] == good[0]:
        bad = sng.sample_codes()
    before = sng.theta[0].copy()
    assert sng.update([good, bad], [0.1, 0.9])
    assert sng.theta[0][good[0]] > before[good[0]] and sng.theta[0][bad[0]] < before[bad[0]]
    assert all(
        np.isclose(t.sum(), 1) and (t >= m - 1e-12).all()
        for t, m in zip(sng.theta, sng.theta_min, strict=True)
    )


def test_inactive_cells_are_masked():
    sng = CategoricalSNG(SPACE, delta=0.5, seed=0)
    a = SPACE.encode(SPACE.min_arch())  # 6 layers: cells 7..12 inactive
    b = a.copy()
    b[1] = (a[1] + 1) % 12
    assert (a[7:] == INACTIVE).all()
    before = [t.copy() for t in sng.theta]
    sng.update([a, b], [0.0, 1.0])
    for var in range(7, 13):  # layers beyond both candidates' depth did not move
        assert np.array_equal(sng.theta[var], before[var])
    assert not np.array_equal(sng.theta[1], before[1])


def test_phase_restriction_is_respected():
    sng = CategoricalSNG(SPACE, seed=1)
    sub = SubSpace.of(SPACE, depth=[12], heads=[8, 12], ffn=[3072])
    for _ in range(20):
        arch, _ = sng.sample(sub)
        assert arch.depth == 12 and set(arch.heads) <= {8, 12} and set(arch.ffn) == {3072}


def test_exploit_probability_falls_as_theta_concentrates():
    sng = CategoricalSNG(SPACE, delta=1.0, seed=2)
    assert sng.exploit_probability() == pytest.approx(1.0)
    target = SPACE.encode(SPACE.max_arch())
    for _ in range(30):
        other = sng.sample_codes()
        sng.update([target, other], [0.0, 1.0])
    assert sng.exploit_probability() < 0.8
    assert sng.mode() == SPACE.max_arch()


def test_state_round_trip():
    sng = CategoricalSNG(SPACE, seed=3)
    sng.update([sng.sample_codes(), sng.sample_codes()], [0.0, 1.0])
    other = CategoricalSNG(SPACE, seed=99)
    other.load_state_dict(sng.state_dict())
    assert all(np.array_equal(a, b) for a, b in zip(sng.theta, other.theta, strict=True))
    assert np.array_equal(sng.sample_codes(), other.sample_codes())
