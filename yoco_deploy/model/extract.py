"""Cut a sub-BERT out of the super-BERT as a standalone dense model, and save/load it.

The saved directory (config.json, model.safetensors, modeling_yoco_bert.py, tokenizer
files) loads with plain transformers:
``AutoModelForSequenceClassification.from_pretrained(dir, trust_remote_code=True)``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from yoco_deploy.arch import Arch
from yoco_deploy.errors import ModelLoadError
from yoco_deploy.model import modeling_yoco_bert
from yoco_deploy.model.modeling_yoco_bert import YocoBertConfig, YocoBertForSequenceClassification
from yoco_deploy.model.super_bert import SuperBert

_MODULE = Path(modeling_yoco_bert.__file__).name
AUTO_MAP = {
    "AutoConfig": f"{_MODULE[:-3]}.YocoBertConfig",
    "AutoModelForSequenceClassification": f"{_MODULE[:-3]}.YocoBertForSequenceClassification",
}
_COPIED = (
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "initializer_range",
    "layer_norm_eps",
    "pad_token_id",
    "classifier_dropout",
    "id2label",
    "label2id",
    "problem_type",
)


def sub_config(super_bert: SuperBert, arch: Arch) -> YocoBertConfig:
    super_bert.space.validate(arch)
    c, d = super_bert.config, super_bert.dims
    kwargs = {k: getattr(c, k) for k in _COPIED if getattr(c, k, None) is not None}
    config = YocoBertConfig(
        vocab_size=d.vocab_size,
        hidden_size=d.hidden,
        head_dim=d.head_dim,
        layer_heads=list(arch.heads),
        layer_ffn=list(arch.ffn),
        max_position_embeddings=d.max_positions,
        type_vocab_size=d.type_vocab_size,
        pooling=super_bert.pooling,
        source_layers=list(super_bert.space.kept_layers(arch.depth)),
        **kwargs,
    )
    config.yoco_arch = arch.to_dict()
    config.yoco_arch_id = arch.arch_id
    config.auto_map = dict(AUTO_MAP)
    return config


def onnx_config(super_bert: SuperBert, arch: Arch) -> dict:
    """config.json of a bundle, whose weights are in model.onnx only: a stock BertConfig
    describing the graph's interface (vocabulary, positions, labels, depth), so that
    optimum's ORTModel and transformers' pipeline() read it without custom code. The
    per-layer widths, which BertConfig cannot express, are under ``layer_heads`` and
    ``layer_ffn``; there are no PyTorch weights, so transformers refuses to build a
    PyTorch model from it rather than building a wrong one."""
    sub = sub_config(super_bert, arch)
    c = super_bert.config
    copied = {k: getattr(c, k) for k in _COPIED if getattr(c, k, None) is not None}
    config = super_bert.dims.bert_config(num_hidden_layers=arch.depth, **copied).to_dict()
    config.update(
        architectures=["BertForSequenceClassification"],
        layer_heads=sub.layer_heads,
        layer_ffn=sub.layer_ffn,
        pooling=sub.pooling,
        source_layers=sub.source_layers,
        yoco_arch=arch.to_dict(),
        yoco_arch_id=arch.arch_id,
        yoco_note=(
            "weights in model.onnx only; num_attention_heads and intermediate_size are the "
            "super-BERT's, each layer's own are layer_heads and layer_ffn"
        ),
    )
    return config


@torch.no_grad()
def extract(super_bert: SuperBert, arch: Arch) -> YocoBertForSequenceClassification:
    """A dense model with exactly the sub-BERT's (smaller) tensors, in eval mode."""
    dense = YocoBertForSequenceClassification(sub_config(super_bert, arch))
    shared = super_bert.model.state_dict()
    kept = super_bert.space.kept_layers(arch.depth)
    for name, tensor in dense.state_dict().items():
        source = shared[_source_name(name, kept)]
        tensor.copy_(source[tuple(slice(0, n) for n in tensor.shape)])
    return dense.eval()


def _source_name(name: str, kept: tuple[int, ...]) -> str:
    """Dense layer i holds the super-BERT's layer ``kept[i]``."""
    prefix = "bert.encoder.layer."
    if not name.startswith(prefix):
        return name
    index, rest = name[len(prefix) :].split(".", 1)
    return f"{prefix}{kept[int(index)]}.{rest}"


def arch_of(model: YocoBertForSequenceClassification) -> Arch:
    return Arch.from_dict(model.config.yoco_arch)


def save_extracted(model: YocoBertForSequenceClassification, out_dir: Path, tokenizer=None) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    shutil.copyfile(modeling_yoco_bert.__file__, out_dir / _MODULE)
    if tokenizer is not None:
        tokenizer.save_pretrained(out_dir)
    return out_dir


def load_extracted(path: str | Path) -> YocoBertForSequenceClassification:
    path = Path(path)
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path} is not an extracted sub-BERT directory (no config.json)")
    try:
        return YocoBertForSequenceClassification.from_pretrained(path).eval()
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"cannot load extracted sub-BERT from {path}: {err}") from None
