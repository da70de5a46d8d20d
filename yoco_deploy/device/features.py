"""Latency features of a sub-BERT at (batch, seq): the one definition, versioned.

Each term is work that some kernel does, so a non-negative linear model over them is a
roofline-style latency model (HAT's public data: 11 structured terms matched an MLP).
Changing any term changes ``FEATURE_SCHEMA_VERSION``; predictors refuse other versions.
"""

from __future__ import annotations

import numpy as np

from yoco_deploy.arch import Arch
from yoco_deploy.space import ModelDims

FEATURE_SCHEMA_VERSION = 1

FEATURES = (
    "const",  # per-inference overhead
    "batch",  # per-sequence work outside the encoder (pooler, classifier)
    "embed_tokens",  # embedding gather + LayerNorm: tokens * hidden
    "layers",  # per-layer kernel launches
    "layer_tokens",  # per-layer LayerNorm/residual: depth * tokens * hidden
    "heads",  # per-head kernel overhead: sum of heads
    "proj_macs",  # Q, K, V and output projections
    "attn_macs",  # QK^T and probs @ V
    "softmax_elems",  # attention-score elements (softmax, mask add)
    "ffn_macs",  # the two FFN matmuls
    "ffn_act",  # GELU elements
)
_SCALE = np.array([1, 1, 1e6, 1, 1e6, 1, 1e9, 1e9, 1e6, 1e9, 1e6], dtype=float)


def feature_vector(arch: Arch, dims: ModelDims, batch: int, seq_len: int) -> np.ndarray:
    tokens = batch * seq_len
    hid, d = dims.hidden, dims.head_dim
    heads = np.array(arch.heads, dtype=float)
    ffn = np.array(arch.ffn, dtype=float)
    raw = np.array(
        [
            1.0,
            batch,
            tokens * hid,
            arch.depth,
            arch.depth * tokens * hid,
            heads.sum(),
            4 * tokens * hid * d * heads.sum(),
            2 * batch * seq_len * seq_len * d * heads.sum(),
            batch * seq_len * seq_len * heads.sum(),
            2 * tokens * hid * ffn.sum(),
            tokens * ffn.sum(),
        ]
    )
    return raw / _SCALE


def feature_matrix(rows: list[tuple[Arch, int, int]], dims: ModelDims) -> np.ndarray:
    """One row per (arch, batch, seq_len)."""
    return np.stack([feature_vector(a, dims, b, s) for a, b, s in rows])
