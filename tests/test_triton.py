"""Every bundle carries a Triton model repository whose config parses with Triton's own
schema (the ``model_config_pb2`` module the tritonclient wheel ships) and matches the
bundle's ONNX file."""

import importlib.util
from pathlib import Path

import pytest

from helpers import ship_tiny_bundle, write_tiny_task


def triton_schema():
    """Triton's ModelConfig protobuf, loaded from its file: the grpc package's __init__
    wants grpcio, which the schema does not need."""
    spec = importlib.util.find_spec("tritonclient")
    if spec is None:
        pytest.fail("tritonclient is missing: `make test` installs it (the test extra)")
    path = Path(next(iter(spec.submodule_search_locations))) / "grpc" / "model_config_pb2.py"
    module_spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def parse(text: str):
    from google.protobuf import text_format

    return text_format.Parse(text, triton_schema().ModelConfig())


ORT_TO_TRITON = {"tensor(int64)": "TYPE_INT64", "tensor(float)": "TYPE_FP32"}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    from yoco_deploy.train.data import load_task

    root = tmp_path_factory.mktemp("triton")
    model_dir, data_dir = write_tiny_task(root, n_train=10, n_dev=8)
    return ship_tiny_bundle(model_dir, load_task("sst2", data_dir), root / "bundles")


def test_every_bundle_has_a_repository_that_matches_its_onnx_file(bundle):
    import onnxruntime as ort

    from yoco_deploy.deploy.triton import CONFIG, TRITON

    manifest = bundle.manifest
    assert manifest.triton["repository"] == TRITON
    folder = bundle.path / TRITON / manifest.triton["model"]
    config = parse((folder / CONFIG).read_text())
    model = folder / "1" / "model.onnx"
    assert config.name == folder.name and config.backend == "onnxruntime"
    assert model.read_bytes() == (bundle.path / "model.onnx").read_bytes()
    assert config.max_batch_size == max(1, manifest.batch)
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    for declared, actual in ((config.input, session.get_inputs()),
                             (config.output, session.get_outputs())):  # fmt: skip
        assert [t.name for t in declared] == [a.name for a in actual]
        for t, a in zip(declared, actual, strict=True):
            schema = triton_schema()
            assert schema.DataType.Name(t.data_type) == ORT_TO_TRITON[a.type]
            # without the batch axis; a named (dynamic) axis is -1
            assert list(t.dims) == [d if isinstance(d, int) else -1 for d in a.shape[1:]]
    assert [g.kind for g in config.instance_group] == [triton_schema().ModelInstanceGroup.KIND_CPU]
    threads = manifest.session["threads"]
    assert config.parameters["intra_op_thread_count"].string_value == str(threads)
    assert not config.HasField("dynamic_batching")  # batch 1: nothing to gather


def test_a_server_shape_and_a_gpu_session_reach_the_config(bundle):
    from yoco_deploy.deploy.triton import config_text
    from yoco_deploy.runtime import SessionSpec

    onnx = bundle.path / "model.onnx"
    gpu = SessionSpec(provider="cuda", threads=4, graph_optimization="extended")
    config = parse(config_text("server", onnx, gpu, batch=16))
    schema = triton_schema()
    assert config.max_batch_size == 16
    assert list(config.dynamic_batching.preferred_batch_size) == [16]
    assert [g.kind for g in config.instance_group] == [schema.ModelInstanceGroup.KIND_GPU]
    assert config.optimization.graph.level == 1
    assert config.parameters["inter_op_thread_count"].string_value == "1"
    default = parse(config_text("edge", onnx, SessionSpec(), batch=1))
    assert not default.HasField("optimization")
    assert "intra_op_thread_count" not in default.parameters


def test_model_names_are_safe_folder_names():
    from yoco_deploy.deploy.triton import model_name

    name = "edge@2.6ms_accuracy@0.978_780d13d1ae"
    assert model_name(name) == "edge_2_6ms_accuracy_0_978_780d13d1ae"
    assert model_name("../../etc") == "etc" and model_name("@@") == "model"
