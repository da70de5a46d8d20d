"""A BERT classifier whose layers may differ in head count and FFN width.

This file is copied verbatim next to every extracted sub-BERT, so that
``AutoModelForSequenceClassification.from_pretrained(dir, trust_remote_code=True)``
loads it with plain transformers: it must import nothing but torch and transformers.

The layer math lives in the functions ``embed``, ``self_attention``, ``feed_forward``
and ``classify_head``. The elastic super-BERT of yoco_deploy calls the very same
functions with sliced weights, so a sub-BERT computes bit-for-bit the same graph
inside the super-BERT and as a standalone model.

Reshapes name the head count explicitly (``view(B, S, heads, head_dim)``), unlike
transformers' ``view(..., -1, head_dim)``: ONNX Runtime's attention fusion reads the
head count of each layer from that constant, so heterogeneous layers fuse correctly.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from transformers import PretrainedConfig, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.modeling_outputs import SequenceClassifierOutput


class YocoBertConfig(PretrainedConfig):
    model_type = "yoco_bert"

    def __init__(
        self,
        vocab_size: int = 30522,
        hidden_size: int = 768,
        head_dim: int = 64,
        layer_heads: list[int] | None = None,
        layer_ffn: list[int] | None = None,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.1,
        max_position_embeddings: int = 512,
        type_vocab_size: int = 2,
        initializer_range: float = 0.02,
        layer_norm_eps: float = 1e-12,
        pad_token_id: int = 0,
        classifier_dropout: float | None = None,
        pooling: str = "cls",
        source_layers: list[int] | None = None,
        **kwargs,
    ):
        if pooling not in ("cls", "mean"):
            raise ValueError(f"pooling must be 'cls' or 'mean', got {pooling!r}")
        self.pooling = pooling
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.head_dim = head_dim
        self.layer_heads = list(layer_heads if layer_heads is not None else [12] * 12)
        self.layer_ffn = list(layer_ffn if layer_ffn is not None else [3072] * 12)
        if len(self.layer_heads) != len(self.layer_ffn):
            raise ValueError("layer_heads and layer_ffn must have one entry per layer")
        # which layers of the original model these are (a record; the weights are here)
        self.source_layers = list(
            source_layers if source_layers is not None else range(len(self.layer_heads))
        )
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.max_position_embeddings = max_position_embeddings
        self.type_vocab_size = type_vocab_size
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.classifier_dropout = classifier_dropout
        super().__init__(pad_token_id=pad_token_id, **kwargs)

    @property
    def num_hidden_layers(self) -> int:
        return len(self.layer_heads)


# --------------------------------------------------------------------------------------
# Layer math shared with the elastic super-BERT.
# --------------------------------------------------------------------------------------


def additive_mask(attention_mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, S) 0/1 mask -> (B, 1, 1, S) additive mask, the form ORT's fusion recognises."""
    mask = attention_mask[:, None, None, :].to(dtype)
    return (1.0 - mask) * torch.finfo(dtype).min


def embed(
    input_ids: torch.Tensor,
    token_type_ids: torch.Tensor,
    position_ids: torch.Tensor,
    word: torch.Tensor,
    position: torch.Tensor,
    token_type: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
    dropout: float,
    training: bool,
) -> torch.Tensor:
    """``position_ids`` is (1, S): a slice of a (1, max_positions) buffer in the dense model,
    the pattern ONNX Runtime's EmbedLayerNormalization fusion matches."""
    x = F.embedding(input_ids, word) + F.embedding(token_type_ids, token_type)
    x = x + F.embedding(position_ids, position)
    x = F.layer_norm(x, ln_weight.shape, ln_weight, ln_bias, eps)
    return F.dropout(x, dropout, training)


def self_attention(
    x: torch.Tensor,
    mask: torch.Tensor,
    heads: int,
    head_dim: int,
    qkv: tuple[torch.Tensor, ...],
    out: tuple[torch.Tensor, torch.Tensor],
    ln: tuple[torch.Tensor, torch.Tensor],
    eps: float,
    attn_dropout: float,
    hidden_dropout: float,
    training: bool,
) -> torch.Tensor:
    """Post-LN multi-head self-attention block; qkv = (Wq, bq, Wk, bk, Wv, bv)."""
    batch, seq = x.shape[0], x.shape[1]
    wq, bq, wk, bk, wv, bv = qkv

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(batch, seq, heads, head_dim).transpose(1, 2)

    q = split(F.linear(x, wq, bq))
    k = split(F.linear(x, wk, bk))
    v = split(F.linear(x, wv, bv))
    scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(head_dim)
    probs = F.dropout(torch.softmax(scores + mask, dim=-1), attn_dropout, training)
    ctx = torch.matmul(probs, v).transpose(1, 2).contiguous().view(batch, seq, heads * head_dim)
    y = F.dropout(F.linear(ctx, *out), hidden_dropout, training)
    return F.layer_norm(y + x, ln[0].shape, ln[0], ln[1], eps)


def feed_forward(
    x: torch.Tensor,
    inner: tuple[torch.Tensor, torch.Tensor],
    outer: tuple[torch.Tensor, torch.Tensor],
    ln: tuple[torch.Tensor, torch.Tensor],
    act,
    eps: float,
    hidden_dropout: float,
    training: bool,
) -> torch.Tensor:
    y = F.dropout(F.linear(act(F.linear(x, *inner)), *outer), hidden_dropout, training)
    return F.layer_norm(y + x, ln[0].shape, ln[0], ln[1], eps)


def pool(x: torch.Tensor, attention_mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """``cls``: the first token's state; ``mean``: the mean over unpadded tokens (the
    pooling sentence-transformers models are trained with)."""
    if pooling == "cls":
        return x[:, 0]
    weights = attention_mask.unsqueeze(-1).to(x.dtype)
    return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def classify_head(
    x: torch.Tensor,
    attention_mask: torch.Tensor,
    pooling: str,
    pooler: tuple[torch.Tensor, torch.Tensor],
    classifier: tuple[torch.Tensor, torch.Tensor],
    dropout: float,
    training: bool,
) -> torch.Tensor:
    pooled = torch.tanh(F.linear(pool(x, attention_mask, pooling), *pooler))
    return F.linear(F.dropout(pooled, dropout, training), *classifier)


def _pair(linear: nn.Linear | nn.LayerNorm) -> tuple[torch.Tensor, torch.Tensor]:
    return linear.weight, linear.bias


# --------------------------------------------------------------------------------------
# Dense modules. Parameter names mirror transformers' BERT, so that a sub-BERT's tensors
# are the leading slices of the super-BERT's tensors of the same name.
# --------------------------------------------------------------------------------------


class YocoBertEmbeddings(nn.Module):
    def __init__(self, config: YocoBertConfig):
        super().__init__()
        h = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, h, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, h)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, h)
        self.LayerNorm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.register_buffer(
            "position_ids",
            torch.arange(config.max_position_embeddings).unsqueeze(0),
            persistent=False,
        )
        self.config = config

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        c = self.config
        return embed(
            input_ids,
            token_type_ids,
            self.position_ids[:, : input_ids.shape[1]],
            self.word_embeddings.weight,
            self.position_embeddings.weight,
            self.token_type_embeddings.weight,
            *_pair(self.LayerNorm),
            c.layer_norm_eps,
            c.hidden_dropout_prob,
            self.training,
        )


class YocoBertSelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, head_dim: int):
        super().__init__()
        self.query = nn.Linear(hidden, heads * head_dim)
        self.key = nn.Linear(hidden, heads * head_dim)
        self.value = nn.Linear(hidden, heads * head_dim)


class YocoBertSelfOutput(nn.Module):
    def __init__(self, inner: int, hidden: int, eps: float):
        super().__init__()
        self.dense = nn.Linear(inner, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)


class YocoBertAttention(nn.Module):
    def __init__(self, config: YocoBertConfig, heads: int):
        super().__init__()
        self.self = YocoBertSelfAttention(config.hidden_size, heads, config.head_dim)
        self.output = YocoBertSelfOutput(
            heads * config.head_dim, config.hidden_size, config.layer_norm_eps
        )
        self.heads = heads
        self.config = config

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        c, s = self.config, self.self
        return self_attention(
            x,
            mask,
            self.heads,
            c.head_dim,
            (*_pair(s.query), *_pair(s.key), *_pair(s.value)),
            _pair(self.output.dense),
            _pair(self.output.LayerNorm),
            c.layer_norm_eps,
            c.attention_probs_dropout_prob,
            c.hidden_dropout_prob,
            self.training,
        )


class YocoBertIntermediate(nn.Module):
    def __init__(self, hidden: int, ffn: int):
        super().__init__()
        self.dense = nn.Linear(hidden, ffn)


class YocoBertLayer(nn.Module):
    def __init__(self, config: YocoBertConfig, heads: int, ffn: int):
        super().__init__()
        self.attention = YocoBertAttention(config, heads)
        self.intermediate = YocoBertIntermediate(config.hidden_size, ffn)
        self.output = YocoBertSelfOutput(ffn, config.hidden_size, config.layer_norm_eps)
        self.act = ACT2FN[config.hidden_act]
        self.config = config

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        c = self.config
        x = self.attention(x, mask)
        return feed_forward(
            x,
            _pair(self.intermediate.dense),
            _pair(self.output.dense),
            _pair(self.output.LayerNorm),
            self.act,
            c.layer_norm_eps,
            c.hidden_dropout_prob,
            self.training,
        )


class YocoBertEncoder(nn.Module):
    def __init__(self, config: YocoBertConfig):
        super().__init__()
        self.layer = nn.ModuleList(
            YocoBertLayer(config, h, f)
            for h, f in zip(config.layer_heads, config.layer_ffn, strict=True)
        )


class YocoBertPooler(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)


class YocoBertModel(nn.Module):
    def __init__(self, config: YocoBertConfig):
        super().__init__()
        self.embeddings = YocoBertEmbeddings(config)
        self.encoder = YocoBertEncoder(config)
        self.pooler = YocoBertPooler(config.hidden_size)


class YocoBertPreTrainedModel(PreTrainedModel):
    config_class = YocoBertConfig
    base_model_prefix = "bert"

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, YocoBertEmbeddings):
            # a non-persistent buffer is not in the checkpoint: rebuild it after loading
            ids = module.position_ids
            ids.copy_(torch.arange(ids.shape[-1], device=ids.device).unsqueeze(0))


class YocoBertForSequenceClassification(YocoBertPreTrainedModel):
    def __init__(self, config: YocoBertConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.bert = YocoBertModel(config)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ):
        c = self.config
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.bert.embeddings(input_ids, token_type_ids)
        mask = additive_mask(attention_mask, x.dtype)
        for layer in self.bert.encoder.layer:
            x = layer(x, mask)
        dropout = c.hidden_dropout_prob if c.classifier_dropout is None else c.classifier_dropout
        logits = classify_head(
            x,
            attention_mask,
            c.pooling,
            _pair(self.bert.pooler.dense),
            _pair(self.classifier),
            dropout,
            self.training,
        )
        loss = None
        if labels is not None:
            if self.num_labels == 1:
                loss = F.mse_loss(logits.squeeze(-1), labels.to(logits.dtype))
            else:
                loss = F.cross_entropy(logits, labels)
        if return_dict is False:
            return (logits,) if loss is None else (loss, logits)
        return SequenceClassifierOutput(loss=loss, logits=logits)
