"""Classify sentences with a shipped bundle: onnxruntime + tokenizers, nothing else.

python examples/use_bundle.py BUNDLE_DIR "a gripping, funny film" "a dull mess"
"""

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

bundle, sentences = sys.argv[1], sys.argv[2:]
manifest = json.loads(Path(bundle, "manifest.json").read_text())
tokenizer = Tokenizer.from_file(f"{bundle}/tokenizer.json")
tokenizer.enable_truncation(manifest["seq_len"])
tokenizer.enable_padding(pad_id=tokenizer.token_to_id("[PAD]") or 0)
encodings = tokenizer.encode_batch(sentences)
feeds = {
    "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
    "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
    "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
}
options = ort.SessionOptions()
options.intra_op_num_threads = manifest["threads"] or 0
session = ort.InferenceSession(f"{bundle}/model.onnx", options, providers=["CPUExecutionProvider"])
logits = session.run(None, feeds)[0]
for sentence, row in zip(sentences, logits, strict=True):
    print(json.dumps({"text": sentence, "label": int(row.argmax()), "logits": row.tolist()}))
