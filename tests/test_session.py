"""One definition of how a bundle is run: SessionSpec, recorded and rebuilt everywhere."""

import importlib.util
from pathlib import Path

import pytest

from yoco_deploy import runtime
from yoco_deploy.runtime import RunnerError, SessionSpec

ROOT = Path(__file__).resolve().parent.parent


def _entries(options) -> dict:
    keys = (
        "session.intra_op.allow_spinning",
        "session.force_spinning_stop",
        "session.set_denormal_as_zero",
    )
    out = {}
    for key in keys:
        try:
            out[key] = options.get_session_config_entry(key)
        except Exception:  # ORT raises when a key was never set
            out[key] = None
    return {
        **out,
        "intra": options.intra_op_num_threads,
        "level": options.graph_optimization_level,
    }


@pytest.mark.parametrize("spinning", ["on", "off", "stop-after-run"])
def test_a_spec_round_trips_and_builds_the_options_it_names(spinning):
    spec = SessionSpec(threads=3, spinning=spinning, provider_options=(("a", "1"),))
    assert SessionSpec.from_dict(spec.to_dict()) == spec
    entries = _entries(spec.session_options())
    assert entries["intra"] == 3
    assert (entries["session.intra_op.allow_spinning"] == "0") == (spinning == "off")
    assert (entries["session.force_spinning_stop"] == "1") == (spinning == "stop-after-run")


@pytest.mark.parametrize("flush", [True, False])
def test_denormals_are_flushed_unless_the_spec_keeps_them(flush):
    """Flushed by default (real text makes denormals, which are slow on x86); a record
    written before the setting existed was timed without it and reads back so."""
    assert SessionSpec().flush_denormals
    spec = SessionSpec(threads=2, flush_denormals=flush)
    assert SessionSpec.from_dict(spec.to_dict()) == spec
    entry = _entries(spec.session_options())["session.set_denormal_as_zero"]
    assert (entry == "1") == flush
    old_record = {k: v for k, v in spec.to_dict().items() if k != "flush_denormals"}
    assert SessionSpec.from_dict(old_record).flush_denormals is False
    assert ("denormals flushed" in spec.describe()) == flush
    with pytest.raises(RunnerError, match="flush_denormals must be true or false"):
        SessionSpec(flush_denormals="yes")


def test_bad_specs_are_one_clear_error():
    with pytest.raises(RunnerError, match="spinning must be one of"):
        SessionSpec(spinning="fast")
    with pytest.raises(RunnerError, match="graph_optimization"):
        SessionSpec(graph_optimization="max")
    with pytest.raises(RunnerError, match="unknown session settings: spin"):
        SessionSpec.from_dict({"spin": "on"})


def test_records_from_before_specs_read_as_timed_with_spinning_off():
    legacy = {"provider": "CPUExecutionProvider", "threads": 2, "ort_spinning": False}
    assert runtime.recorded_session(legacy) == SessionSpec(
        threads=2, spinning="off", flush_denormals=False
    )
    spec = SessionSpec(threads=1)
    assert runtime.recorded_session(runtime.device_fingerprint(spec)) == spec


def test_the_example_builds_the_same_session_as_the_spec():
    """examples/use_bundle.py (onnxruntime and tokenizers only) must run a bundle the way
    it was timed: its options equal SessionSpec's for every setting."""
    path = ROOT / "examples" / "use_bundle.py"
    module_spec = importlib.util.spec_from_file_location("use_bundle", path)
    example = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(example)
    for spinning in ("on", "off", "stop-after-run"):
        for level in ("basic", "all"):
            for flush in (True, False):
                spec = SessionSpec(
                    threads=2, spinning=spinning, graph_optimization=level, flush_denormals=flush
                )
                ours = _entries(spec.session_options())
                theirs = _entries(example.session_options(spec.to_dict()))
                assert ours == theirs, (spinning, level, flush)


def test_io_bound_timing_on_the_cpu_provider(tmp_path):
    """With I/O binding the inputs are bound once per session and the timed run returns
    the same logits as a plain run."""
    import numpy as np

    from yoco_deploy.export.to_onnx import export_onnx

    from helpers import tiny_bert

    model = tiny_bert().eval()
    path = tmp_path / "m.onnx"
    export_onnx(model, path)
    spec = SessionSpec(threads=1, io_binding=True)
    assert SessionSpec(provider="cuda").io_binding and not SessionSpec().io_binding
    backend = runtime.OrtBackend(spec)
    session = backend.load(path)
    feeds = runtime.make_feeds(2, 8, vocab_size=model.config.vocab_size)
    stats = runtime.measure(backend, session, feeds, runtime.Protocol(2, 5, 5, 5))
    assert stats.runs == 5 and stats.median_ms > 0
    binding = backend.binding(session, feeds)
    assert backend.binding(session, feeds) is binding  # bound once, reused
    bound = binding.copy_outputs_to_cpu()[0]
    plain = session.run(None, feeds)[0]
    np.testing.assert_allclose(bound, plain, atol=1e-6)
    assert SessionSpec.from_dict(spec.to_dict()) == spec
