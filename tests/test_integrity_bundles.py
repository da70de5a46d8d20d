"""Nothing edited, stale or foreign is trusted: a bundle is checked on
load against what ship wrote, and every bad bundle, classify input, export folder or user
file is one error line, never a traceback or a confident answer."""

import json
import shutil

import numpy as np
import pytest

from yoco_deploy.bundle import BundleError, load_bundle
from yoco_deploy.errors import ExportError
from yoco_deploy.util.hashing import file_sha256

from helpers import assert_one_line_error, run, runner, ship_tiny_bundle, write_tiny_task

OTHER_ARCH = '{"layers": [{"heads": 2, "ffn": 24}, {"heads": 4, "ffn": 48}]}'


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """Two bundles of the tiny BERT, of two sub-BERTs, and the model they came from."""
    from yoco_deploy.arch import Arch
    from yoco_deploy.train.data import load_task

    root = tmp_path_factory.mktemp("integrity")
    model_dir, data_dir = write_tiny_task(root, n_train=10, n_dev=8)
    data = load_task("sst2", data_dir)
    first = ship_tiny_bundle(model_dir, data, root / "bundles")
    other = ship_tiny_bundle(model_dir, data, root / "bundles", Arch.from_json(OTHER_ARCH))
    return first.path, other.path, model_dir


@pytest.fixture
def bundle(shipped, tmp_path):
    """A fresh copy of the first bundle, to edit."""
    return shutil.copytree(shipped[0], tmp_path / "bundle")


def _manifest(bundle) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def _edit_manifest(bundle, **changes) -> None:
    (bundle / "manifest.json").write_text(json.dumps({**_manifest(bundle), **changes}))


def _replace_model(bundle, model) -> None:
    """Another graph as model.onnx, with the manifest's sha256 made to match it (what
    only a deliberate edit does): the checks after the file's digest must catch it."""
    import onnx

    onnx.save(model, str(bundle / "model.onnx"))
    _edit_manifest(bundle, onnx_sha256=file_sha256(bundle / "model.onnx"))


def _classify_fails(bundle, fragment: str, *texts: str) -> None:
    assert_one_line_error(run("classify", bundle, *(texts or ("a good film",))), fragment)


# ---- bundle load: the files are the ones ship wrote ---------------------------------------


def test_a_clean_bundle_loads_and_records_its_tokenizer(bundle):
    assert _manifest(bundle)["tokenizer_sha256"] == file_sha256(bundle / "tokenizer.json")
    assert run("classify", bundle, "a good film").exit_code == 0


def test_a_bundle_from_before_the_tokenizer_digest_still_loads(bundle):
    """Written as an older ship wrote it: no tokenizer_sha256, the digest in model.onnx
    over that manifest. Every other check still runs."""
    from yoco_deploy.export.metadata import set_digest

    older = {k: v for k, v in _manifest(bundle).items() if k != "tokenizer_sha256"}
    set_digest(bundle / "model.onnx", older)
    older["onnx_sha256"] = file_sha256(bundle / "model.onnx")
    (bundle / "manifest.json").write_text(json.dumps(older))
    assert [p.name for p in load_bundle(bundle).classify(["a good film"])] in (
        ["negative"],
        ["positive"],
    )
    _edit_manifest(bundle, seq_len=32)  # the manifest's digest is still checked
    _classify_fails(bundle, "is not the manifest written with this model.onnx")


def test_another_bundles_model_onnx_is_refused(bundle, shipped):
    shutil.copyfile(shipped[1] / "model.onnx", bundle / "model.onnx")
    with pytest.raises(BundleError, match=r"model\.onnx is not the file this bundle shipped"):
        load_bundle(bundle)
    _classify_fails(bundle, "re-ship the bundle")


def test_half_the_embeddings_zeroed_is_refused(bundle):
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(bundle / "model.onnx"))
    table = next(
        t for t in model.graph.initializer if "word_embeddings" in t.name and len(t.dims) == 2
    )
    values = numpy_helper.to_array(table).copy()
    values[: len(values) // 2] = 0
    table.CopyFrom(numpy_helper.from_array(values, table.name))
    onnx.save(model, str(bundle / "model.onnx"))
    _classify_fails(bundle, "model.onnx is not the file this bundle shipped")


def test_a_scrambled_tokenizer_vocabulary_is_refused(bundle):
    tokenizer = json.loads((bundle / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    tokenizer["model"]["vocab"] = dict(zip(vocab, reversed(list(vocab.values())), strict=True))
    (bundle / "tokenizer.json").write_text(json.dumps(tokenizer))
    _classify_fails(bundle, "tokenizer.json is not the file this bundle shipped")


@pytest.mark.parametrize("edit", ["claimed accuracy", "foreign model with its sha256"])
def test_a_manifest_not_written_with_its_model_is_refused(bundle, shipped, edit):
    if edit == "claimed accuracy":
        metric = {**_manifest(bundle)["metric"], "value": 0.99}
        _edit_manifest(bundle, metric=metric)
    else:
        shutil.copyfile(shipped[1] / "model.onnx", bundle / "model.onnx")
        _edit_manifest(bundle, onnx_sha256=file_sha256(bundle / "model.onnx"))
    _classify_fails(bundle, "manifest.json is not the manifest written with this model.onnx")


def test_class_names_edited_in_config_are_refused(bundle):
    config = json.loads((bundle / "config.json").read_text())
    config["id2label"] = {"0": "positive", "1": "negative"}
    (bundle / "config.json").write_text(json.dumps(config))
    _classify_fails(bundle, "config.json names the classes")


def test_an_export_over_a_bundles_model_is_refused_on_load(bundle, shipped):
    """What `export --out BUNDLE` did before it was refused: a valid ONNX file of the same
    model, without the bundle's metadata, under the bundle's manifest."""
    from yoco_deploy.arch import Arch
    from yoco_deploy.export.sub_bert import ExportOptions, export_sub_bert
    from yoco_deploy.model.super_bert import SuperBert

    sb = SuperBert.from_pretrained(str(shipped[2]), 2).eval()
    arch = Arch.from_dict(_manifest(bundle)["arch"])
    options = ExportOptions.for_format("int8", save_model_dir=False)
    report = export_sub_bert(sb, arch, bundle.parent / "export", options, seq_len=16)
    shutil.copyfile(report.deploy_file, bundle / "model.onnx")
    _classify_fails(bundle, "model.onnx is not the file this bundle shipped")


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"seq_len": "16"}, "seq_len must be a whole number, got '16'"),
        ({"seq_len": None}, "seq_len must be a whole number, got None"),
        ({"seq_len": 0}, "seq_len must be 1 to 65536, got 0"),
        ({"seq_len": -5}, "seq_len must be 1 to 65536, got -5"),
        ({"seq_len": 10**12}, "seq_len must be 1 to 65536"),
        ({"seq_len": True}, "seq_len must be a whole number, got True"),
        ({"labels": "negative"}, "labels must be a list"),
        ({"session": {"provider": "cpu", "io_binding": "yes"}}, "session.io_binding must be"),
        ({"session": {"provider": "cpu", "threads": True}}, "session.threads must be"),
    ],
)
def test_a_manifest_value_of_the_wrong_type_or_range_is_one_line(bundle, changes, fragment):
    _edit_manifest(bundle, **changes)
    _classify_fails(bundle, fragment)


@pytest.mark.parametrize(
    ("id2label", "fragment"),
    [(["negative", "positive"], "id2label must map class numbers"),
     ({"zero": "negative", "one": "positive"}, "id2label must map class numbers")],
)  # fmt: skip
def test_class_names_that_are_not_a_numbered_mapping_are_one_line(bundle, id2label, fragment):
    config = json.loads((bundle / "config.json").read_text())
    (bundle / "config.json").write_text(json.dumps({**config, "id2label": id2label}))
    _classify_fails(bundle, fragment)


def test_a_graph_with_other_inputs_is_one_line(bundle):
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(np.ones((4, 2), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["logits"])], "other",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])], [weight],
    )  # fmt: skip
    _replace_model(bundle, helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    _classify_fails(bundle, "model.onnx takes x where a bundle takes int64 input_ids")


def test_a_graph_with_another_output_shape_is_one_line(bundle):
    from onnx import TensorProto, helper, numpy_helper

    table = numpy_helper.from_array(np.ones((200, 5), dtype=np.float32), "table")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "input_ids"], ["rows"]),
         helper.make_node("ReduceMean", ["rows"], ["logits"], axes=[1], keepdims=0)],
        "five-classes",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 5])], [table],
    )  # fmt: skip
    _replace_model(bundle, helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]))
    _classify_fails(bundle, "gives logits of shape ['batch', 5] where this bundle's 2 classes")


def test_a_deeply_nested_manifest_is_one_line(bundle):
    (bundle / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    _classify_fails(bundle, "nests lists or objects deeper than 64 levels")


def test_a_file_hashed_once_is_not_read_again_until_it_changes(tmp_path, monkeypatch):
    """The load check's cost: a file whose inode, size, mtime and ctime are unchanged
    since it was hashed is not hashed again; a file replaced by another is."""
    import yoco_deploy.bundle as bundle_module
    import yoco_deploy.util.hashing as hashing

    monkeypatch.setenv("YOCO_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "model.onnx"
    path.write_bytes(b"one" * 1000)
    fresh = bundle_module.verified_sha256(path)  # just written: hashed, not remembered
    assert not (tmp_path / "cache").exists() and fresh == file_sha256(path)
    monkeypatch.setattr(bundle_module, "SETTLED_NS", 0)  # as if written long ago
    assert bundle_module.verified_sha256(path) == fresh
    hashed = []
    monkeypatch.setattr(hashing, "file_sha256", lambda p: hashed.append(p) or "hashed")
    assert bundle_module.verified_sha256(path) == fresh and hashed == []  # remembered
    other = tmp_path / "other"
    other.write_bytes(b"two" * 1000)  # same size, another file moved over it
    other.replace(path)
    assert bundle_module.verified_sha256(path) == "hashed" and hashed == [path]


# ---- classify: every input is classified or refused in one line ---------------------------


def test_non_utf8_text_on_stdin_is_one_line(bundle):
    from yoco_deploy.cli.main import app

    stdin = b"a good film\n\xff\xfe not text\n"
    result = runner.invoke(app, ["classify", str(bundle), "-"], input=stdin)
    assert_one_line_error(result, "stdin is not UTF-8 text")


@pytest.mark.parametrize("texts", [("",), ("a good film", "   ")])
def test_an_empty_text_is_refused(bundle, texts):
    _classify_fails(bundle, "is empty: there is nothing to classify in it", *texts)


def test_a_dash_mixed_with_texts_is_refused(bundle):
    _classify_fails(bundle, "'-' reads the texts from stdin and cannot be mixed", "a film", "-")


def test_a_nan_logit_is_an_error_not_a_label(bundle, monkeypatch):
    from yoco_deploy.bundle import Bundle

    monkeypatch.setattr(
        Bundle, "logits", lambda self, texts, batch_size=32: np.full((1, 2), np.nan)
    )
    _classify_fails(bundle, "gave logits that are not numbers (NaN or infinite) for text 1")
    with pytest.raises(BundleError, match="not numbers"):
        load_bundle(bundle).classify(["a good film"])


@pytest.mark.parametrize("batch_size", [-1, 0])
def test_a_batch_size_below_one_is_refused_by_the_api(bundle, batch_size):
    with pytest.raises(BundleError, match=f"batch_size must be .* at least 1, got {batch_size}"):
        load_bundle(bundle).classify(["a good film"], batch_size=batch_size)


# ---- export: a folder is replaced whole, never a bundle -----------------------------------


def _snapshot(folder) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_export_into_a_bundle_is_refused_and_leaves_it_as_it_was(bundle, shipped):
    before = _snapshot(bundle)
    result = run("export", "-m", shipped[2], "--arch", OTHER_ARCH, "--out", bundle)
    assert_one_line_error(result, "is a shipped bundle (it has a manifest.json)")
    assert _snapshot(bundle) == before


def test_export_into_a_folder_of_other_files_is_refused(tiny_super, tmp_path):
    from yoco_deploy.export.sub_bert import export_sub_bert

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match=r"holds 'notes\.txt', which an export does not write"):
        export_sub_bert(tiny_super, tiny_super.space.min_arch(), tmp_path / "out")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["notes.txt"]


def test_a_re_export_replaces_the_folder_whole_or_not_at_all(tiny_super, tmp_path, monkeypatch):
    """An interrupted re-export leaves the earlier export byte for byte; a finished one
    leaves no file of the earlier one (no stale model.int8.onnx beside a new model.onnx)."""
    from yoco_deploy.export import sub_bert
    from yoco_deploy.export.sub_bert import ExportOptions, export_sub_bert

    out, space = tmp_path / "out", tiny_super.space
    export_sub_bert(
        tiny_super, space.min_arch(), out, ExportOptions(optimize=True, quantize="int8")
    )
    before = _snapshot(out)
    validate = sub_bert.validate_onnx

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sub_bert, "validate_onnx", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_sub_bert(tiny_super, space.max_arch(), out)
    assert _snapshot(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging folder left
    monkeypatch.setattr(sub_bert, "validate_onnx", validate)
    report = export_sub_bert(tiny_super, space.max_arch(), out)
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "model", "model.onnx"]
    assert json.loads((out / "export.json").read_text())["arch_id"] == space.max_arch().arch_id
    assert report.out_dir == str(out) and report.deploy_file == out / "model.onnx"


def test_export_onto_a_full_disk_is_one_line(tiny_dir, tmp_path):
    """A file-size limit makes the kernel refuse writes past 64 KB, as a full disk does:
    the extracted model's weights cannot be written."""
    import resource
    import signal

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG, not a killed process
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))
    try:
        result = run("export", "-m", tiny_dir, "--arch", OTHER_ARCH, "--out", tmp_path / "out")
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
    assert_one_line_error(result, "no space left to write the export to")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny-bert"]  # nothing half-written


# ---- user files: deep or binary files are named, not tracebacks ----------------------------


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (("[" * 100_000 + "]" * 100_000).encode(), "nests lists or objects deeper than 64"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "is not UTF-8 text"),
    ],
)
def test_a_deep_or_binary_arch_file_is_one_line(tiny_dir, tmp_path, content, fragment):
    path = tmp_path / "arch.json"
    path.write_bytes(content)
    assert_one_line_error(run("costs", "--model", tiny_dir, "--arch", path), fragment)


def test_a_deeply_nested_space_file_is_one_line(tiny_dir, tmp_path):
    path = tmp_path / "space.json"
    path.write_text("{" + '"depth": ' + "[" * 100_000 + "]" * 100_000 + "}")
    assert_one_line_error(run("space", "--model", tiny_dir, "--space", path), "deeper than 64")
