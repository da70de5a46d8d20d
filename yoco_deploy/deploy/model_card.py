"""The bundle's README.md: a model card a hub indexes (front matter with model-index) and a
person reads (device, budget, measured latency, architecture, how to run it).

Written with huggingface_hub's card classes, from the manifest alone, so what the card
says is what the manifest records.
"""

from __future__ import annotations

from yoco_deploy.manifest import BundleManifest
from yoco_deploy.train.data import GLUE_HUB


def card_data(m: BundleManifest):
    from huggingface_hub import EvalResult, ModelCardData

    metric, data = m.metric, m.data
    hub = data.get("source") == GLUE_HUB
    result = EvalResult(
        task_type="text-classification",
        dataset_type=GLUE_HUB if hub else "local",
        dataset_name=data.get("name", "local data"),
        dataset_config=data.get("task") if hub else None,
        dataset_split="validation" if hub else "dev",
        metric_type=metric["name"],
        metric_value=round(float(metric["value"]), 4),
    )
    return ModelCardData(
        model_name=m.name,
        base_model=m.base_model,
        datasets=[GLUE_HUB] if hub else None,
        metrics=[metric["name"]],
        pipeline_tag="text-classification",
        library_name="onnx",
        tags=["onnx", m.format, "bert", "yoco-deploy", "text-classification"],
        eval_results=[result],
    )


def render(m: BundleManifest) -> str:
    """The whole card: front matter, then the body."""
    from huggingface_hub import ModelCard

    card = ModelCard(f"---\n{card_data(m).to_yaml()}\n---\n{_body(m)}")
    return str(card)


def budgets_text(budgets: dict[str, float], budget_ms: float | None = None) -> str:
    """Every budget a bundle was shipped under, in its own unit; ``budget_ms``: the
    latency budget in ms (a relative one resolved)."""
    budgets = dict(budgets)
    share = budgets.pop("latency_share", None)
    if budget_ms is not None:
        budgets["latency"] = budget_ms
    units = {
        "latency": lambda v: (
            f"latency {v:.3f} ms" + (f" ({share:.0%} of the max sub-BERT's)" if share else "")
        ),
        "flops": lambda v: f"FLOPs {v / 1e9:.3g} G",
        "params": lambda v: f"parameters {v / 1e6:.3g} M",
        "size": lambda v: f"file size {v:g} MB",
    }
    parts = [units.get(k, lambda v, k=k: f"{k} {v}")(v) for k, v in sorted(budgets.items())]
    return ", ".join(parts) or "none"


def _measured_line(lat, timing: dict) -> str:
    """The latency, and how it was taken when the manifest says (rounds, interval)."""
    line = f"median {lat.median:.3f} ms, p90 {lat.p90:.3f} ms ({lat.runs} runs"
    if timing.get("rounds") is None:
        return line + ")"
    lo, hi = timing["interval_ms"]
    line += f" in {timing['rounds']} rounds; 95% interval {lo:.3f}-{hi:.3f} ms"
    if timing.get("ratio") is not None:
        at = {
            "profile": "its median over the device's profile",
            "ship": "its median over the ship",
        }.get(timing.get("stated_at", "ship"))
        line += f", {timing['ratio']:.3f} x the reference model's speed ({at})"
    clear = "" if timing.get("budget_clear", True) else "; the budget was not settled by it"
    return line + ")" + clear


def _tail_rows(m: BundleManifest) -> str:
    """The budgeted percentile and the throughput, where the manifest records them."""
    rows = ""
    if m.measured_latency_ms.percentile is not None:
        value = m.measured_latency_ms.percentile
        rows += f"\n| {m.statistic} latency (budgeted) | {value:.3f} ms |"
    if m.throughput is not None:
        rows += f"\n| throughput | {m.throughput:.1f} sequences/s at batch {m.batch} |"
    return rows


def _body(m: BundleManifest) -> str:
    lat, timing, quality = m.measured_latency_ms, m.timing, m.quality
    session = m.session or {}
    layers = m.arch["layers"]
    sources = m.source_layers or [None] * len(layers)
    rows = "\n".join(
        f"| {i + 1} | {src + 1 if src is not None else '-'} | {layer['heads']} | {layer['ffn']} |"
        for i, (layer, src) in enumerate(zip(layers, sources, strict=True))
    )
    budget_line = budgets_text(m.budgets, m.budget_ms)
    predicted = timing.get("calibrated_prediction_ms")
    predicted_line = (
        f"{predicted:.3f} ms (calibrated by the reference model timed beside it, "
        f"{timing['reference_ms']:.3f} ms)"
        if predicted is not None
        else "no latency predictor"
    )
    floor = quality.get("floor")
    baseline = quality.get("majority_baseline")
    gate = (
        f" (majority class {baseline:.3f}, shipping floor {floor:.3f})" if floor is not None else ""
    )
    label_text = ", ".join(f"{i}: `{name}`" for i, name in enumerate(m.labels)) or "a score"
    return f"""
# {m.name or m.arch_id}

A sub-BERT of {f"`{m.base_model}`" if m.base_model else "a BERT model"}
fine-tuned for the task `{m.task or "text classification"}`, cut
without retraining from a weight-sharing super-BERT (YOCO-BERT, arXiv 2106.02435) by
yoco-deploy and shipped as ONNX ({m.format}) for the device **{m.device}** under
the target `{m.target}`.

| | |
|---|---|
| dev {m.metric["name"]} | {m.metric["value"]:.4f}{gate} |
| labels | {label_text} |
| budgets | {budget_line} |
| measured latency | {_measured_line(lat, timing)} |{_tail_rows(m)}
| predicted latency | {predicted_line} |
| timed with | ONNX Runtime, {session.get("provider", m.provider)}, \
{session.get("threads", m.threads)} threads, spinning {session.get("spinning", "off")}, \
denormals {"flushed" if session.get("flush_denormals") else "kept"}, \
batch {m.batch}, {m.seq_len} tokens |
| parameters | {m.params / 1e6:.2f} M \
({m.params_non_embedding / 1e6:.2f} M without embeddings) |
| FLOPs | {m.flops / 1e9:.2f} G per sequence of {m.seq_len} tokens |
| file | model.onnx, {m.size_mb:.1f} MB, sha256 `{m.onnx_sha256[:16]}...` |

The latency was measured on {m.device} with the session settings above (recorded in
`manifest.json` under `session`); another machine, or other settings, runs at another
speed. Inputs longer than **{m.seq_len} tokens are truncated** (the tokenizer's
`model_max_length`): that is the length the latency was measured at.

## Architecture

{len(layers)} layers, each with its own number of attention heads and FFN width.

| layer | super-BERT layer | heads | FFN |
|---|---|---|---|
{rows}

## Use

With yoco-deploy (only onnxruntime and tokenizers are needed at run time):

```python
from yoco_deploy import load_bundle

bundle = load_bundle("path/to/this/folder")
print(bundle.classify(["a gripping, funny film", "a dull mess"]))
```

With optimum and `transformers.pipeline` (optimum-onnx 0.1 needs transformers < 4.58:
`pip install optimum-onnx==0.1.0 "transformers<4.58" onnxruntime`; no custom code runs):

```python
from optimum.onnxruntime import ORTModelForSequenceClassification
from transformers import AutoTokenizer, pipeline

model = ORTModelForSequenceClassification.from_pretrained("path/to/this/folder")
tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")
classify = pipeline("text-classification", model=model, tokenizer=tokenizer)
print(classify(["a gripping, funny film"], truncation=True))
```

optimum opens ONNX Runtime with its own default session settings; to run at the
latency measured here, pass `session_options` built as `manifest.json`'s `session` says
(threads, spinning, graph optimization, and `session.set_denormal_as_zero` when
`flush_denormals` is true: without it real text runs several percent slower).

With ONNX Runtime alone, as `examples/use_bundle.py` in yoco-deploy does: build the
session from `manifest.json`'s `session`, tokenize with `tokenizer.json` (truncate to
{m.seq_len} tokens) and feed `input_ids`, `attention_mask` and `token_type_ids`
(int64); the output is the logits.

`manifest.json` holds everything above in machine-readable form; the ONNX file's own
metadata (`session.get_modelmeta().custom_metadata_map`, keys `yoco.*`) names its
architecture, labels, sequence length, format and the manifest's digest.
"""
