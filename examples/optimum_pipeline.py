"""Classify sentences with a shipped bundle through optimum and transformers.pipeline.

pip install optimum-onnx==0.1.0 "transformers<4.58" onnxruntime   # optimum's versions today
python examples/optimum_pipeline.py BUNDLE_DIR "a gripping, funny film" "a dull mess"

No yoco-deploy and no custom code: the bundle's config.json is a stock BERT config with
its class names. The session is built as the manifest's "session" record says (the
settings its latency was measured with), and inputs are truncated to the length it was
timed at (the tokenizer's model_max_length).
"""

import json
import sys
from pathlib import Path

from optimum.onnxruntime import ORTModelForSequenceClassification
from transformers import AutoTokenizer, pipeline

sys.path.insert(0, str(Path(__file__).parent))
from use_bundle import session_settings


def main(bundle: str, sentences: list[str]) -> None:
    manifest = json.loads(Path(bundle, "manifest.json").read_text())
    providers, provider_options, options = session_settings(manifest)
    model = ORTModelForSequenceClassification.from_pretrained(
        bundle, providers=providers, provider_options=provider_options, session_options=options
    )
    tokenizer = AutoTokenizer.from_pretrained(bundle)
    classify = pipeline("text-classification", model=model, tokenizer=tokenizer)
    for sentence, out in zip(sentences, classify(sentences, truncation=True), strict=True):
        print(json.dumps({"text": sentence, **out}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
