"""The search space of sub-BERTs, derived from a BERT config (one place for this fact).

Depth keeps L layers (which ones: the space's layer selection, ``readout.kept_layers``).
Each kept layer picks a head count and an FFN width. The categorical encoding used by
ESNG has one depth variable and one (heads, FFN) cell per position of the full model;
cell i belongs to the i-th kept layer, cells beyond the sampled depth are inactive (-1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from yoco_deploy.arch import Arch, LayerSpec
from yoco_deploy.errors import ArchError, SpaceError
from yoco_deploy.model.readout import LAYER_SELECTIONS, SELECTION_KEY, kept_layers

INACTIVE = -1

# YOCO-BERT's published space for BERT-base (12 layers, hidden 768, 12 heads, FFN 3072).
_YOCO_BASE = {"depth": (6, 8, 10, 12), "heads": (4, 8, 12), "ffn": (512, 768, 1024, 3072)}
_HEAD_FRACTIONS = (1 / 3, 2 / 3, 1.0)
_FFN_FRACTIONS = (0.25, 0.5, 0.75, 1.0)
_OVERRIDE_FIELDS = {
    "depth": "depth_choices",
    "heads": "head_choices",
    "ffn": "ffn_choices",
    "layers": "layer_selection",
}


@dataclass(frozen=True)
class ModelDims:
    """The fixed dimensions of a BERT classifier that sub-BERTs share."""

    num_layers: int
    num_heads: int
    head_dim: int
    hidden: int
    intermediate: int
    vocab_size: int
    max_positions: int
    type_vocab_size: int
    num_labels: int

    @classmethod
    def from_config(cls, config: Any) -> ModelDims:
        heads = int(config.num_attention_heads)
        hidden = int(config.hidden_size)
        if hidden % heads:
            raise SpaceError(f"hidden size {hidden} is not a multiple of {heads} heads")
        return cls(
            num_layers=int(config.num_hidden_layers),
            num_heads=heads,
            head_dim=hidden // heads,
            hidden=hidden,
            intermediate=int(config.intermediate_size),
            vocab_size=int(config.vocab_size),
            max_positions=int(config.max_position_embeddings),
            type_vocab_size=int(config.type_vocab_size),
            num_labels=int(getattr(config, "num_labels", 2)),
        )

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)

    def bert_config(self, **overrides: Any):
        """A stock ``BertConfig`` of these dimensions (the inverse of ``from_config``)."""
        from transformers import BertConfig

        dims = dict(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            intermediate_size=self.intermediate,
            max_position_embeddings=self.max_positions,
            type_vocab_size=self.type_vocab_size,
            num_labels=self.num_labels,
        )
        return BertConfig(**{**dims, **overrides})

    def check_seq_len(self, seq_len: int) -> int:
        """A sequence length the model can run: positive, and no longer than its position
        embeddings (beyond them ONNX Runtime and torch fail deep inside)."""
        if not 0 < seq_len <= self.max_positions:
            raise SpaceError(
                f"sequence length {seq_len} is outside 1..{self.max_positions}: the model "
                f"has {self.max_positions} position embeddings"
            )
        return seq_len


@dataclass(frozen=True)
class SearchSpace:
    dims: ModelDims
    depth_choices: tuple[int, ...]
    head_choices: tuple[int, ...]
    ffn_choices: tuple[int, ...]
    layer_selection: str = "first"
    cells: tuple[tuple[int, int], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        d = self.dims
        if self.layer_selection not in LAYER_SELECTIONS:
            raise SpaceError(
                f"layers must be one of {', '.join(LAYER_SELECTIONS)}, got {self.layer_selection!r}"
            )
        _check_choices("depth", self.depth_choices, d.num_layers)
        _check_choices("heads", self.head_choices, d.num_heads)
        _check_choices("ffn", self.ffn_choices, d.intermediate)
        cells = tuple((h, f) for h in self.head_choices for f in self.ffn_choices)
        object.__setattr__(self, "cells", cells)

    # ---- construction ------------------------------------------------------------

    @classmethod
    def default_for(cls, dims: ModelDims) -> SearchSpace:
        """YOCO's space for BERT-base; for other sizes the same shape by rule:
        depth = 4 evenly spaced values from L/2 to L, heads = 1/3, 2/3, 1 of the heads,
        FFN = 1/4, 1/2, 3/4, 1 of the intermediate size."""
        if (dims.num_layers, dims.hidden, dims.num_heads, dims.intermediate) == (12, 768, 12, 3072):
            return cls(dims, _YOCO_BASE["depth"], _YOCO_BASE["heads"], _YOCO_BASE["ffn"])
        top = dims.num_layers
        depth = np.linspace(math.ceil(top / 2), top, 4).round().astype(int)
        heads = [max(1, round(dims.num_heads * f)) for f in _HEAD_FRACTIONS]
        ffn = [max(1, round(dims.intermediate * f)) for f in _FFN_FRACTIONS]
        return cls(dims, _uniq(depth), _uniq(heads), _uniq(ffn))

    @classmethod
    def from_config(cls, config: Any, overrides: dict[str, Any] | None = None) -> SearchSpace:
        """The default space; a checkpoint that records its layer selection keeps it."""
        space = cls.default_for(ModelDims.from_config(config))
        selection = getattr(config, SELECTION_KEY, None)
        if selection:
            space = space.with_overrides({"layers": selection})
        return space.with_overrides(overrides) if overrides else space

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchSpace:
        """Inverse of ``to_dict`` (``layers`` absent: YOCO's first-L selection)."""
        return cls(
            ModelDims(**data["dims"]),
            tuple(data["depth"]),
            tuple(data["heads"]),
            tuple(data["ffn"]),
            data.get("layers", "first"),
        )

    def with_overrides(self, overrides: dict[str, Any]) -> SearchSpace:
        """Replace any of the choice lists (keys ``depth``, ``heads``, ``ffn``) or the
        layer selection (``layers``: first or even)."""
        if not isinstance(overrides, dict):
            raise SpaceError("a space override is a mapping with keys depth, heads, ffn, layers")
        unknown = set(overrides) - set(_OVERRIDE_FIELDS)
        if unknown:
            raise SpaceError(
                f"unknown space key(s) {sorted(unknown)}; valid keys: depth, heads, ffn, layers"
            )
        changes: dict[str, Any] = {}
        for key, value in overrides.items():
            if key == "layers":
                changes["layer_selection"] = value
                continue
            if not isinstance(value, list | tuple) or not all(
                isinstance(v, int) and not isinstance(v, bool) for v in value
            ):
                raise SpaceError(f"space key {key!r} must be a list of integers, got {value!r}")
            changes[_OVERRIDE_FIELDS[key]] = _uniq(value)
        return replace(self, **changes)

    @classmethod
    def load_overrides(cls, path: str | Path) -> dict[str, Any]:
        """Read a JSON or YAML file holding ``{depth: [...], heads: [...], ffn: [...]}``."""
        from yoco_deploy.util.user_file import load_mapping, read_json

        path = Path(path)
        if path.suffix in (".yaml", ".yml"):
            return load_mapping(path, SpaceError, "a space file")
        return read_json(path, SpaceError, "space file")

    # ---- facts ---------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Number of distinct architectures."""
        per_layer = len(self.cells)
        return sum(per_layer**d for d in self.depth_choices)

    @property
    def cardinalities(self) -> tuple[int, ...]:
        """Categories per variable of the encoding: depth, then one cell per layer."""
        return (len(self.depth_choices),) + (len(self.cells),) * self.dims.num_layers

    def max_arch(self) -> Arch:
        return Arch.uniform(max(self.depth_choices), max(self.head_choices), max(self.ffn_choices))

    def min_arch(self) -> Arch:
        return Arch.uniform(min(self.depth_choices), min(self.head_choices), min(self.ffn_choices))

    def kept_layers(self, depth: int) -> tuple[int, ...]:
        """0-based original layers a depth-``depth`` sub-BERT of this space holds."""
        return kept_layers(self.layer_selection, self.dims.num_layers, depth)

    def shape_dict(self) -> dict[str, Any]:
        """The shapes sub-BERTs can take: all that latency depends on (profiles and
        predictors are keyed by it, whichever layers the weights come from)."""
        return {
            "dims": self.dims.to_dict(),
            "depth": list(self.depth_choices),
            "heads": list(self.head_choices),
            "ffn": list(self.ffn_choices),
            "size": self.size,
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.shape_dict(), "layers": self.layer_selection}

    def same_shapes(self, other: SearchSpace | dict[str, Any]) -> bool:
        """Whether ``other`` (a space, or a recorded ``shape_dict``) allows exactly the
        sub-BERT shapes this one does: what a profile or predictor must match."""
        shapes = other.shape_dict() if isinstance(other, SearchSpace) else other
        return self.shape_dict() == shapes

    # ---- validation and encoding --------------------------------------------------

    def validate(self, arch: Arch) -> Arch:
        problems = []
        if arch.depth not in self.depth_choices:
            problems.append(f"depth {arch.depth} not in {list(self.depth_choices)}")
        for i, layer in enumerate(arch.layers):
            if layer.heads not in self.head_choices:
                problems.append(f"layer {i} heads {layer.heads} not in {list(self.head_choices)}")
            if layer.ffn not in self.ffn_choices:
                problems.append(f"layer {i} ffn {layer.ffn} not in {list(self.ffn_choices)}")
        if problems:
            raise ArchError("architecture outside the search space: " + "; ".join(problems))
        return arch

    def contains(self, arch: Arch) -> bool:
        try:
            self.validate(arch)
        except ArchError:
            return False
        return True

    def encode(self, arch: Arch) -> np.ndarray:
        """Arch -> int vector [depth index, cell index per layer (-1 beyond depth)]."""
        self.validate(arch)
        codes = np.full(1 + self.dims.num_layers, INACTIVE, dtype=np.int64)
        codes[0] = self.depth_choices.index(arch.depth)
        for i, layer in enumerate(arch.layers):
            codes[1 + i] = self.cells.index((layer.heads, layer.ffn))
        return codes

    def decode(self, codes: Sequence[int]) -> Arch:
        """Inverse of ``encode``; cells beyond the encoded depth are ignored."""
        codes = [int(c) for c in codes]
        if len(codes) != 1 + self.dims.num_layers:
            raise ArchError(f"expected {1 + self.dims.num_layers} codes, got {len(codes)}")
        if not 0 <= codes[0] < len(self.depth_choices):
            raise ArchError(f"depth code {codes[0]} out of range")
        depth = self.depth_choices[codes[0]]
        layers = []
        for i in range(depth):
            c = codes[1 + i]
            if not 0 <= c < len(self.cells):
                raise ArchError(f"cell code {c} of layer {i} out of range")
            layers.append(LayerSpec(*self.cells[c]))
        return Arch(tuple(layers))

    def sampler(self, seed: int | None = 0) -> ArchSampler:
        return ArchSampler(self, seed)


class ArchSampler:
    """Uniform sampler over a space; owns its seeded generator."""

    def __init__(self, space: SearchSpace, seed: int | None = 0):
        self.space = space
        self.rng = np.random.default_rng(seed)

    def sample(self) -> Arch:
        return sample_arch(self.space, self.rng)

    def sample_many(self, n: int) -> list[Arch]:
        return [self.sample() for _ in range(n)]


def sample_arch(space: SearchSpace, rng: np.random.Generator) -> Arch:
    """A uniform draw from ``space`` with the caller's generator: a depth, then one
    (heads, FFN) cell per layer."""
    depth = int(rng.choice(space.depth_choices))
    picks = rng.integers(0, len(space.cells), size=depth)
    return Arch(tuple(LayerSpec(*space.cells[int(c)]) for c in picks))


def _uniq(values: Sequence[int]) -> tuple[int, ...]:
    return tuple(sorted({int(v) for v in values}))


def _check_choices(name: str, choices: tuple[int, ...], top: int) -> None:
    if not choices:
        raise SpaceError(f"{name} choices are empty")
    bad = [c for c in choices if not 0 < c <= top]
    if bad:
        raise SpaceError(f"{name} choices {bad} outside 1..{top} (the full model's {name})")
