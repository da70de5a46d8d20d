import pytest
import torch

from yoco_deploy.arch import Arch
from yoco_deploy.errors import ArchError
from yoco_deploy.model.super_bert import SuperBert

from helpers import batch_inputs, some_archs, tiny_bert


def test_full_arch_equals_transformers_forward(tiny_model, tiny_super):
    x = batch_inputs(120)
    with torch.no_grad():
        expected = tiny_model(**x).logits
        got = tiny_super(**x)
    assert torch.allclose(got, expected, atol=1e-6)


def test_set_active_validates_and_helpers(tiny_super):
    s = tiny_super.space
    assert tiny_super.active == s.max_arch()
    assert tiny_super.set_min() == s.min_arch() and tiny_super.active == s.min_arch()
    arch = tiny_super.set_random(s.sampler(1))
    assert s.contains(arch)
    with pytest.raises(ArchError, match="not in"):
        tiny_super.set_active(Arch.uniform(1, 6, 96))


def test_sub_berts_differ_from_each_other(tiny_super):
    x = batch_inputs(120)
    outs = []
    with torch.no_grad():
        for arch in some_archs(tiny_super.space, 3):
            tiny_super.set_active(arch)
            outs.append(tiny_super(**x))
    for a in range(len(outs)):
        for b in range(a + 1, len(outs)):
            assert not torch.allclose(outs[a], outs[b])


def test_gradients_reach_exactly_the_active_slices(tiny_super):
    sb = tiny_super.train()
    arch = Arch.uniform(2, 2, 24)  # 2 of 4 layers, 2 of 6 heads (16 of 48 dims), 24 of 96 FFN
    sb.set_active(arch)
    sb(**batch_inputs(120)).sum().backward()
    layers = sb.model.bert.encoder.layer
    q, inter = layers[0].attention.self.query.weight, layers[0].intermediate.dense.weight
    assert q.grad[:16].abs().sum() > 0 and q.grad[16:].abs().sum() == 0
    assert inter.grad[:24].abs().sum() > 0 and inter.grad[24:].abs().sum() == 0
    out = layers[1].attention.output.dense.weight
    assert out.grad[:, :16].abs().sum() > 0 and out.grad[:, 16:].abs().sum() == 0
    assert layers[2].intermediate.dense.weight.grad is None  # beyond depth: untouched


@pytest.mark.parametrize("with_data", [False, True])
def test_importance_reordering_keeps_the_full_model(with_data):
    model = tiny_bert(seed=5)
    sb = SuperBert(model).eval()
    x = batch_inputs(120, batch=4, seq=24, seed=1)
    with torch.no_grad():
        before_full = sb(**x)
        sb.set_min()
        before_min = sb(**x)
        sb.set_max()
    batches = [{**x, "labels": torch.tensor([0, 1, 2, 1])}] if with_data else None
    orders = sb.reorder_by_importance(batches)
    with torch.no_grad():
        assert torch.allclose(sb(**x), before_full, atol=1e-5)
        sb.set_min()
        assert not torch.allclose(sb(**x), before_min, atol=1e-5)  # slices now differ
    assert len(orders["heads"]) == 4 and sorted(orders["heads"][0]) == list(range(6))
    assert sorted(orders["ffn"][3]) == list(range(96))
    # after reordering, importance is sorted: a second pass is the identity permutation
    again = sb.reorder_by_importance(batches)
    if not with_data:  # norms are exactly permutation-invariant
        assert again["heads"][0] == list(range(6)) and again["ffn"][0] == list(range(96))
