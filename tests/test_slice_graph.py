"""Sub-BERT graphs cut from the max sub-BERT's graph are the exporter's, node for node."""

import itertools
import json

import numpy as np
import onnx
import pytest
from transformers import BertConfig

from yoco_deploy import runtime
from yoco_deploy.device import artifacts
from yoco_deploy.device.profile_store import MEASUREMENTS
from yoco_deploy.device.profiling import ProfileSettings, profile_device
from yoco_deploy.export import slice_graph
from yoco_deploy.export.slice_graph import GraphSlicer, SliceError, signature
from yoco_deploy.model.super_bert import SuperBert
from yoco_deploy.space import SearchSpace

from helpers import TINY, FakeBackend, some_archs, tiny_bert

FAST = runtime.Protocol(warmup=1, min_runs=3, max_runs=6, chunk=3, ref_every=4)


def _space(layers: str = "first") -> SearchSpace:
    space = SearchSpace.from_config(BertConfig(**TINY))
    return space.with_overrides({"layers": layers}) if layers != "first" else space


def _export(super_bert, arch, out, fmt):
    return onnx.load(str(artifacts._export_for_timing(super_bert, arch, out, fmt, False)))


def _session(model):
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _slicer(super_bert, out, fmt):
    dims = super_bert.dims
    top = _export(super_bert, super_bert.space.max_arch(), out, fmt)
    return GraphSlicer(top, dims.num_layers, dims.num_heads, dims.head_dim)


@pytest.mark.parametrize("fmt", ["int8", "fused"])
def test_a_cut_is_the_exported_graph_node_for_node(fmt, tmp_path):
    space = _space()
    super_bert = SuperBert(tiny_bert(), space)
    slicer = _slicer(super_bert, tmp_path / "max", fmt)
    for arch in some_archs(space, n_random=3):
        direct = _export(super_bert, arch, tmp_path / arch.arch_id, fmt)
        cut = slicer.cut(arch, space.kept_layers(arch.depth))
        assert signature(cut) == signature(direct), arch
        onnx.checker.check_model(cut)


def test_a_fused_cut_computes_what_the_exported_sub_bert_computes(tmp_path):
    """fp32 weights are cut exactly as extract() cuts them (head and FFN prefixes, the
    space's layers, here evenly spaced), so the logits agree too."""
    space = _space("even")
    super_bert = SuperBert(tiny_bert(), space)
    slicer = _slicer(super_bert, tmp_path / "max", "fused")
    ids = np.random.default_rng(0).integers(0, TINY["vocab_size"], (2, 12))
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids),
             "token_type_ids": np.zeros_like(ids)}  # fmt: skip
    archs = some_archs(space, n_random=3)
    assert {space.kept_layers(a.depth) for a in archs} != {tuple(range(a.depth)) for a in archs}
    for arch in archs:
        direct = _export(super_bert, arch, tmp_path / arch.arch_id, "fused")
        cut = slicer.cut(arch, space.kept_layers(arch.depth))
        got = [_session(m).run(None, feeds)[0] for m in (direct, cut)]
        np.testing.assert_allclose(got[1], got[0], atol=1e-4)


def test_a_graph_without_fusions_is_refused(tmp_path):
    space = _space()
    plain = _export(SuperBert(tiny_bert(), space), space.max_arch(), tmp_path, "fp32")
    with pytest.raises(SliceError, match="SkipLayerNormalization"):
        GraphSlicer(plain, space.dims.num_layers, space.dims.num_heads, space.dims.head_dim)


def test_profiles_time_cut_graphs_and_fall_back_when_a_cut_differs(tmp_path, monkeypatch):
    space = _space()
    settings = ProfileSettings(n=4, protocol=FAST, session=runtime.SessionSpec(threads=1))
    quiet = dict(progress=lambda *a: None, backend=FakeBackend())
    cut = profile_device(space, tmp_path / "cut", "dev", settings, "tiny", **quiet)
    assert cut.graphs == "cut" and cut.measured == 4
    # a cut that differs from the exported reference (another exporter's graph): export all
    real, calls = slice_graph.signature, itertools.count()
    monkeypatch.setattr(slice_graph, "signature", lambda model: [*real(model), next(calls)])
    exported = profile_device(space, tmp_path / "export", "dev", settings, "tiny", **quiet)
    assert exported.graphs == "export" and exported.measured == 4
    lines = (tmp_path / "export" / MEASUREMENTS).read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert sum(r["kind"] == "model" for r in rows) == 4
