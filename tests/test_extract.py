import json

import pytest
import torch

from yoco_deploy.costs import arch_costs
from yoco_deploy.model.extract import arch_of, extract, load_extracted, save_extracted

from helpers import batch_inputs, check_sub_bert, plain_transformers_logits, some_archs


def test_min_max_and_random_archs_are_exact(tiny_super):
    x = batch_inputs(120, batch=2, seq=33)
    for arch in some_archs(tiny_super.space, 5):
        dense = check_sub_bert(tiny_super, arch, x)
        assert arch_of(dense) == arch


def test_extracted_tensors_are_truly_smaller(tiny_super):
    arch = tiny_super.space.sampler(2).sample()
    dense = extract(tiny_super, arch)
    assert len(dense.bert.encoder.layer) == arch.depth
    for spec, layer in zip(arch.layers, dense.bert.encoder.layer, strict=True):
        assert layer.attention.self.query.weight.shape == (spec.heads * 8, 48)
        assert layer.attention.output.dense.weight.shape == (48, spec.heads * 8)
        assert layer.intermediate.dense.weight.shape == (spec.ffn, 48)
        assert layer.output.dense.weight.shape == (48, spec.ffn)


def test_save_and_load_round_trip(tiny_super, tmp_path):
    arch = tiny_super.space.sampler(4).sample()
    dense = extract(tiny_super, arch)
    path = save_extracted(dense, tmp_path / "sub")
    assert {"config.json", "model.safetensors", "modeling_yoco_bert.py"} <= {
        p.name for p in path.iterdir()
    }
    config = json.loads((path / "config.json").read_text())
    assert config["yoco_arch"] == arch.to_dict() and config["yoco_arch_id"] == arch.arch_id
    x = batch_inputs(120)
    with torch.no_grad():
        assert torch.equal(load_extracted(path)(**x).logits, dense(**x).logits)


def test_loads_with_plain_transformers_without_yoco_deploy(tiny_super, tmp_path):
    arch = tiny_super.space.sampler(5).sample()
    dense = extract(tiny_super, arch)
    path = save_extracted(dense, tmp_path / "sub")
    x = batch_inputs(120, batch=2, seq=17)
    with torch.no_grad():
        expected = dense(**x).logits
    got = plain_transformers_logits(path, x, tmp_path)
    assert (got - expected).abs().max().item() <= 1e-6


@pytest.mark.parametrize("seq_len, batch", [(128, 1), (64, 8)])
def test_costs_scale_with_batch_and_sequence(tiny_super, seq_len, batch):
    arch = tiny_super.space.max_arch()
    one = arch_costs(arch, tiny_super.dims, seq_len, 1)
    many = arch_costs(arch, tiny_super.dims, seq_len, batch)
    assert many.flops == batch * one.flops and many.params == one.params
