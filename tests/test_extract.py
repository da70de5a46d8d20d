import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from yoco_deploy.costs import arch_costs
from yoco_deploy.extract import arch_of, extract, load_extracted, save_extracted

from helpers import batch_inputs, check_sub_bert, some_archs


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
    torch.save({k: v for k, v in x.items()}, tmp_path / "inputs.pt")
    with torch.no_grad():
        expected = dense(**x).logits
    script = textwrap.dedent(
        f"""
        import sys
        class Block:  # make yoco_deploy unimportable, even through the editable install
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] == "yoco_deploy":
                    raise ModuleNotFoundError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        try:
            import yoco_deploy
            sys.exit("yoco_deploy is importable")
        except ModuleNotFoundError:
            pass
        import torch
        from transformers import AutoModelForSequenceClassification
        model = AutoModelForSequenceClassification.from_pretrained({str(path)!r},
                                                                   trust_remote_code=True)
        x = torch.load({str(tmp_path / "inputs.pt")!r}, weights_only=True)
        with torch.no_grad():
            logits = model.eval()(**x).logits
        torch.save(logits, {str(tmp_path / "out.pt")!r})
        assert "yoco_deploy" not in sys.modules
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_MODULES_CACHE"] = str(tmp_path / "hf_modules")
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr[-2000:]
    got = torch.load(tmp_path / "out.pt", weights_only=True)
    assert (got - expected).abs().max().item() <= 1e-6


@pytest.mark.parametrize("seq_len, batch", [(128, 1), (64, 8)])
def test_costs_scale_with_batch_and_sequence(tiny_super, seq_len, batch):
    arch = tiny_super.space.max_arch()
    one = arch_costs(arch, tiny_super.dims, seq_len, 1)
    many = arch_costs(arch, tiny_super.dims, seq_len, batch)
    assert many.flops == batch * one.flops and many.params == one.params
