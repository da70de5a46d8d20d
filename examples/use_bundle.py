"""Classify sentences with a shipped bundle: onnxruntime + tokenizers, nothing else.

python examples/use_bundle.py BUNDLE_DIR "a gripping, funny film" "a dull mess"

The session is built as the manifest's "session" record says: the settings the bundle's
latency was measured with (yoco_deploy.runtime.SessionSpec builds the same one).
"""

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}


def session_options(session: dict) -> ort.SessionOptions:
    options = ort.SessionOptions()
    if session.get("threads"):
        options.intra_op_num_threads = session["threads"]
        options.inter_op_num_threads = 1
    spinning = session.get("spinning", "off")  # bundles from before "session": spinning off
    if spinning == "off":
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    elif spinning == "stop-after-run":  # spin during a run, stop as soon as it returns
        options.add_session_config_entry("session.force_spinning_stop", "1")
    if session.get("flush_denormals"):  # denormals cost ~100 cycles each on x86: flushed
        options.add_session_config_entry("session.set_denormal_as_zero", "1")
    level = session.get("graph_optimization", "all")
    options.graph_optimization_level = {
        "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[level]
    return options


def session_settings(manifest: dict) -> tuple[list[str], list[dict], ort.SessionOptions]:
    """Providers, their options and the session options, as the manifest records them."""
    session = manifest.get("session") or {"threads": manifest.get("threads")}
    name = session.get("provider", "cpu")
    providers, provider_options = (
        [PROVIDERS.get(name, name)],
        [session.get("provider_options") or {}],
    )
    if name != "cpu":  # what a GPU provider cannot run falls back to the CPU
        providers, provider_options = [*providers, "CPUExecutionProvider"], [*provider_options, {}]
    return providers, provider_options, session_options(session)


def open_bundle(bundle: str) -> tuple[ort.InferenceSession, Tokenizer, dict]:
    manifest = json.loads(Path(bundle, "manifest.json").read_text())
    providers, provider_options, options = session_settings(manifest)
    model = ort.InferenceSession(
        f"{bundle}/model.onnx", options, providers=providers, provider_options=provider_options
    )
    tokenizer = Tokenizer.from_file(f"{bundle}/tokenizer.json")
    tokenizer.enable_truncation(manifest["seq_len"])
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id("[PAD]") or 0)
    return model, tokenizer, manifest


def main(bundle: str, sentences: list[str]) -> None:
    model, tokenizer, _ = open_bundle(bundle)
    config = json.loads(Path(bundle, "config.json").read_text())
    names = config.get("id2label") or {}  # class names ("negative", "positive"), by index
    encodings = tokenizer.encode_batch(sentences)
    feeds = {
        "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
        "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
    }
    logits = model.run(None, feeds)[0]
    for sentence, row in zip(sentences, logits, strict=True):
        label = int(row.argmax())
        name = names.get(str(label), str(label))
        print(json.dumps({"text": sentence, "label": label, "name": name, "logits": row.tolist()}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
