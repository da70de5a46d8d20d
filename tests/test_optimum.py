"""A shipped bundle opens with optimum's ORTModelForSequenceClassification (no custom code)
and runs in transformers.pipeline with its label names, with the real libraries at the
versions optimum supports today (transformers 4.57, in a folder of their own)."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from yoco_deploy import load_bundle

from helpers import ship_tiny_bundle, write_tiny_task

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
REQUIREMENTS = ROOT / "tests" / "optimum-requirements.txt"

OPTIMUM = """
import json, sys
import transformers
from optimum.onnxruntime import ORTModelForSequenceClassification
from transformers import AutoTokenizer, pipeline

bundle, texts = sys.argv[1], json.loads(sys.argv[2])
model = ORTModelForSequenceClassification.from_pretrained(bundle)  # no trust_remote_code
tokenizer = AutoTokenizer.from_pretrained(bundle)
classify = pipeline("text-classification", model=model, tokenizer=tokenizer)
out = classify(texts, truncation=True)  # one text at a time
import onnxruntime as ort
plain = ort.InferenceSession(bundle + "/model.onnx", providers=["CPUExecutionProvider"])
logits, raw = [], []
for text in texts:
    feeds = tokenizer(text, truncation=True, return_tensors="np")
    logits.append(model(**tokenizer(text, truncation=True, return_tensors="pt")).logits[0])
    raw.append(plain.run(None, {k: v for k, v in feeds.items()})[0][0])
exact = all((a.numpy() == b).all() for a, b in zip(logits, raw))
print(json.dumps({"transformers": transformers.__version__, "pipeline": out, "exact": exact,
                  "logits": [x.tolist() for x in logits],
                  "max_length": tokenizer.model_max_length}))
"""


def optimum_env() -> Path:
    """The pinned packages in a folder of their own, installed once per requirements file."""
    digest = hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()[:12]
    target = ROOT / ".venv" / f"optimum-env-{digest}"
    if not (target / ".done").is_file():
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
             str(target), "-r", str(REQUIREMENTS)],
            capture_output=True, text=True,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-2000:]
        (target / ".done").write_text(digest)
    return target


def test_optimum_and_pipeline_open_a_shipped_bundle(tmp_path, capsys):
    from yoco_deploy.arch import Arch
    from yoco_deploy.train.data import load_task

    model_dir, data_dir = write_tiny_task(tmp_path, n_train=60, n_dev=20)
    data = load_task("sst2", data_dir, search_fraction=0.2)
    # layers of different widths, which a stock BertConfig cannot express: optimum must not care
    arch = Arch.from_dict({"layers": [{"heads": 6, "ffn": 24}, {"heads": 2, "ffn": 96}]})
    shipped = ship_tiny_bundle(model_dir, data, tmp_path / "b", arch)
    config = json.loads((shipped.path / "config.json").read_text())
    assert config["model_type"] == "bert" and config["layer_heads"] == [6, 2]
    texts = ["good great film", "awful boring plot", " ".join(["good"] * 50)]
    env = {**os.environ, "PYTHONPATH": str(optimum_env()), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(
        [sys.executable, "-c", OPTIMUM, str(shipped.path), json.dumps(texts)],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(run.stdout.splitlines()[-1])
    with capsys.disabled():  # the label names, as a user sees them, in CI's log too
        print("\noptimum pipeline():", json.dumps(got["pipeline"]))
    assert got["transformers"].startswith("4.57")
    assert got["max_length"] == 16  # the profiled length
    assert got["exact"]  # optimum's logits are a plain ONNX Runtime session's, same inputs
    example = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "optimum_pipeline.py"), str(shipped.path),
         *texts],
        capture_output=True, text=True, env=env, cwd=tmp_path,
    )  # fmt: skip
    assert example.returncode == 0, example.stderr[-3000:]
    rows = [json.loads(line) for line in example.stdout.splitlines()]
    assert [r["label"] for r in rows] == [p["label"] for p in got["pipeline"]]
    bundle = load_bundle(shipped.path)
    ours = [bundle.classify([text])[0] for text in texts]  # one at a time, as pipeline()
    assert [p["label"] for p in got["pipeline"]] == [p.name for p in ours]
    assert {p["label"] for p in got["pipeline"]} <= {"negative", "positive"}
    for theirs, mine in zip(got["logits"], ours, strict=True):
        assert theirs == pytest.approx(mine.logits, abs=1e-4)
