import onnx
import pytest

from yoco_deploy.arch import Arch, LayerSpec
from yoco_deploy.errors import ExportError, OnnxValidationError
from yoco_deploy.export.optimize import fused_operator_counts, optimize_fused, quantize_int8
from yoco_deploy.export.sub_bert import ExportOptions, export_sub_bert
from yoco_deploy.export.to_onnx import OnnxSpec, export_onnx, validate_onnx
from yoco_deploy.model.extract import extract

from helpers import some_archs

HETERO = Arch((LayerSpec(2, 24), LayerSpec(6, 96), LayerSpec(4, 48)))


def test_onnx_matches_pytorch_for_min_max_and_random(tiny_super, tmp_path):
    for i, arch in enumerate(some_archs(tiny_super.space, 5)):
        dense = extract(tiny_super, arch)
        path = export_onnx(dense, tmp_path / f"m{i}.onnx")
        validation = validate_onnx(path, dense)
        assert validation.worst <= 1e-4
        assert len(validation.max_abs_diff) >= 2  # several shapes, dynamic axes work


def test_dynamic_axes_are_declared(tiny_super, tmp_path):
    path = export_onnx(extract(tiny_super, HETERO), tmp_path / "m.onnx")
    graph = onnx.load(str(path)).graph
    for value in graph.input:
        dims = [d.dim_param for d in value.type.tensor_type.shape.dim]
        assert dims == ["batch", "sequence"], value.name
    assert [i.name for i in graph.input] == ["input_ids", "attention_mask", "token_type_ids"]
    assert [o.name for o in graph.output] == ["logits"]


def test_heterogeneous_heads_fuse_and_stay_correct(tiny_super, tmp_path):
    dense = extract(tiny_super, HETERO)
    plain = export_onnx(dense, tmp_path / "m.onnx")
    validation, counts = optimize_fused(plain, tmp_path / "m.opt.onnx", dense)
    assert validation.worst <= 1e-4
    assert counts["Attention"] == 3  # one per layer, each with its own head count
    assert counts["SkipLayerNormalization"] == 6
    assert counts["EmbedLayerNormalization"] == 1
    assert counts["BiasGelu"] + counts["FastGelu"] == 3
    assert fused_operator_counts(tmp_path / "m.opt.onnx") == counts


def test_validation_lists_every_mismatch(tiny_super, tmp_path):
    dense = extract(tiny_super, HETERO)
    path = export_onnx(dense, tmp_path / "m.onnx")
    other = extract(tiny_super, tiny_super.space.max_arch())
    spec = OnnxSpec(validation_shapes=((1, 8), (2, 30)))
    with pytest.raises(OnnxValidationError) as err:
        validate_onnx(path, other, spec)
    assert len(err.value.mismatches) == 2
    assert "1x8 logits: max abs diff" in str(err.value) and "2x30 logits" in str(err.value)
    assert "atol=0.0001" in str(err.value)


def test_failed_validation_publishes_nothing(tiny_super, tmp_path):
    dense = extract(tiny_super, HETERO)
    plain = export_onnx(dense, tmp_path / "m.onnx")
    wrong = extract(tiny_super, tiny_super.space.max_arch())
    with pytest.raises(OnnxValidationError):
        optimize_fused(plain, tmp_path / "m.opt.onnx", wrong)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_int8_reports_drift(tiny_super, tmp_path):
    dense = extract(tiny_super, tiny_super.space.max_arch())
    plain = export_onnx(dense, tmp_path / "m.onnx")
    report = quantize_int8(plain, tmp_path / "m.int8.onnx", dense)
    assert (tmp_path / "m.int8.onnx").stat().st_size < plain.stat().st_size
    assert 0.0 < report.max_abs_logit_diff < 1.0
    assert 0.0 <= report.argmax_agreement <= 1.0 and report.samples == 64
    with pytest.raises(ExportError, match="argmax"):
        quantize_int8(plain, tmp_path / "strict.int8.onnx", dense, min_agreement=1.01)
    assert not (tmp_path / "strict.int8.onnx").exists()


def test_export_pipeline_writes_everything(tiny_super, tmp_path):
    out = tmp_path / "out"
    report = export_sub_bert(tiny_super, HETERO, out, ExportOptions(optimize=True, quantize="int8"))
    names = {p.name for p in out.iterdir()}
    assert {"model", "model.onnx", "model.opt.onnx", "model.int8.onnx", "export.json"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    assert report.validation["optimized"]["max_abs_diff"] <= 1e-4
    assert report.fused_operators["Attention"] == 3
    assert report.arch_id == HETERO.arch_id and report.int8["samples"] == 64


def test_fp16_halves_the_file_keeps_io_types_and_validates(tiny_super, tmp_path):
    import onnx

    report = export_sub_bert(tiny_super, HETERO, tmp_path, ExportOptions.for_format("fp16"))
    half, fused = tmp_path / "model.fp16.onnx", tmp_path / "model.opt.onnx"
    assert report.deploy_file == half
    assert half.stat().st_size < 0.6 * fused.stat().st_size
    assert 0.0 < report.validation["fp16"]["max_abs_diff"] <= report.validation["fp16"]["atol"]
    graph = onnx.load(str(half)).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.INT64
    assert graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    weights = [t for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT16]
    assert len(weights) > 10


def test_fusion_without_shape_inference_builds_the_same_graph(tiny_super, tmp_path):
    """The fusion skips ONNX Runtime's symbolic shape inference for speed; the graph it
    builds must stay the one the shape-checked fusion builds, node for node."""
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    from yoco_deploy.export.optimize import fusion_options

    def nodes(model):
        return [
            (n.op_type, list(n.input), list(n.output), [str(a) for a in n.attribute])
            for n in model.graph.node
        ]

    assert not fusion_options().enable_shape_inference
    for i, arch in enumerate([HETERO, *some_archs(tiny_super.space, 3)]):
        plain = export_onnx(extract(tiny_super, arch), tmp_path / f"m{i}.onnx")
        for gpu in (False, True):
            fast, checked = (
                optimize_model(str(plain), model_type="bert", num_heads=0, hidden_size=0,
                               use_gpu=gpu, optimization_options=options).model
                for options in (fusion_options(), FusionOptions("bert"))
            )  # fmt: skip
            assert nodes(fast) == nodes(checked), (arch, gpu)
            assert [n.op_type for n in fast.graph.node].count("Attention") == arch.depth
