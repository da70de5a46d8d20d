"""Closed-form costs of a sub-BERT, computed from the Arch without building a model.

FLOPs count matrix multiplications only (2 per multiply-accumulate), the convention of
``torch.utils.flop_counter``: embedding lookups, LayerNorm, softmax, GELU and additions
are left out (under 1% of BERT's work at sequence length 128).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from yoco_deploy.arch import Arch
from yoco_deploy.space import ModelDims

BYTES_FP32 = 4


@dataclass(frozen=True)
class Costs:
    params: int
    params_non_embedding: int
    flops: int
    seq_len: int
    batch: int

    @property
    def size_mb_fp32(self) -> float:
        return self.params * BYTES_FP32 / 1e6

    def to_dict(self) -> dict[str, float | int]:
        return {**asdict(self), "size_mb_fp32": round(self.size_mb_fp32, 3)}


def embedding_params(dims: ModelDims) -> int:
    tables = (dims.vocab_size + dims.max_positions + dims.type_vocab_size) * dims.hidden
    return tables + 2 * dims.hidden  # + embedding LayerNorm


def layer_params(dims: ModelDims, heads: int, ffn: int) -> int:
    h, inner = dims.hidden, heads * dims.head_dim
    attention = 3 * (h * inner + inner) + inner * h + h + 2 * h
    feed_forward = h * ffn + ffn + ffn * h + h + 2 * h
    return attention + feed_forward


def head_params(dims: ModelDims) -> int:
    """Pooler and classifier."""
    h = dims.hidden
    return h * h + h + h * dims.num_labels + dims.num_labels


def layer_flops(dims: ModelDims, heads: int, ffn: int, seq_len: int, batch: int) -> int:
    h, inner, tokens = dims.hidden, heads * dims.head_dim, batch * seq_len
    projections = 4 * tokens * h * inner  # Q, K, V and attention output
    attention = 2 * batch * seq_len * seq_len * inner  # QK^T and probs @ V
    feed_forward = 2 * tokens * h * ffn
    return 2 * (projections + attention + feed_forward)


def arch_costs(arch: Arch, dims: ModelDims, seq_len: int = 128, batch: int = 1) -> Costs:
    if batch <= 0:
        raise ValueError(f"batch must be positive, got {batch}")
    dims.check_seq_len(seq_len)
    body = sum(layer_params(dims, la.heads, la.ffn) for la in arch.layers) + head_params(dims)
    flops = sum(layer_flops(dims, la.heads, la.ffn, seq_len, batch) for la in arch.layers)
    flops += 2 * batch * (dims.hidden * dims.hidden + dims.hidden * dims.num_labels)
    return Costs(
        params=body + embedding_params(dims),
        params_non_embedding=body,
        flops=flops,
        seq_len=seq_len,
        batch=batch,
    )
