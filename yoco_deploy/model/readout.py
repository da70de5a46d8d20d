"""How a sub-BERT reads a sentence out: its pooling and which original layers it keeps.

Both are properties of the super-BERT, fixed before training and recorded in every
artifact, so that a sub-BERT means the same thing when sliced, extracted, exported and
loaded with plain transformers.

- pooling ``cls``: BERT's pooler on the [CLS] token. ``mean``: the masked mean over the
  tokens, then the same pooler and classifier (so the parameter count does not change).
  Sentence-transformers checkpoints (all-MiniLM-L6-v2) were trained with mean pooling;
  their [CLS] state is nearly constant below the top layers, so a [CLS]-pooled shallow
  cut outputs a constant whatever it is trained on.
- layer selection ``first``: a depth-L sub-BERT keeps layers 1..L (YOCO-BERT).
  ``even``: L evenly spaced layers that always include the top one (DynaBERT keeps
  evenly spaced layers too), e.g. {2, 4, 6} of 6.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

Pooling = Literal["cls", "mean"]
LayerSelection = Literal["first", "even"]
POOLINGS: tuple[str, ...] = ("cls", "mean")
LAYER_SELECTIONS: tuple[str, ...] = ("first", "even")

# Keys under which a checkpoint's config.json records them.
POOLING_KEY = "yoco_pooling"
SELECTION_KEY = "yoco_layer_selection"


def kept_layers(selection: str, num_layers: int, depth: int) -> tuple[int, ...]:
    """0-based indices of the original layers a depth-``depth`` sub-BERT keeps, in order."""
    if not 0 < depth <= num_layers:
        raise ValueError(f"depth {depth} outside 1..{num_layers}")
    if selection == "first":
        return tuple(range(depth))
    if selection == "even":
        return tuple((i + 1) * num_layers // depth - 1 for i in range(depth))
    raise ValueError(f"unknown layer selection {selection!r}; choose from {LAYER_SELECTIONS}")


def detect_pooling(model_dir: str | Path | None) -> Pooling | None:
    """The pooling a sentence-transformers folder declares (modules.json and its Pooling
    module's config.json), or None where the folder does not say."""
    if model_dir is None:
        return None
    root = Path(model_dir)
    try:
        modules = json.loads((root / "modules.json").read_text())
        pooling = next(m for m in modules if str(m.get("type", "")).endswith(".Pooling"))
        config = json.loads((root / pooling.get("path", "") / "config.json").read_text())
    except (OSError, ValueError, StopIteration, TypeError, AttributeError):
        return None
    if config.get("pooling_mode_mean_tokens"):
        return "mean"
    if config.get("pooling_mode_cls_token"):
        return "cls"
    return None


def default_layer_selection(pooling: str) -> LayerSelection:
    """Evenly spaced layers whatever the pooling, chosen by the training ablation
    (bench/train_sst2.py --ablation, bench/README.md): with [CLS] pooling the first-L cuts of
    MiniLM stay at chance (0.509 at depth 3) while evenly spaced ones learn (0.815 mean
    over 12 sub-BERTs); with mean pooling the two are within noise of each other (0.821
    and 0.828), and evenly spaced layers met the full-length training bar."""
    return "even"


def resolve_readout(
    config, model_dir: str | Path | None, pooling: str | None = None, selection: str | None = None
) -> tuple[Pooling, LayerSelection]:
    """Explicit choice > what the checkpoint records > what the folder declares > BERT's."""
    pooling = pooling or getattr(config, POOLING_KEY, None) or detect_pooling(model_dir) or "cls"
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose from {POOLINGS}")
    selection = (
        selection or getattr(config, SELECTION_KEY, None) or default_layer_selection(pooling)
    )
    if selection not in LAYER_SELECTIONS:
        raise ValueError(f"unknown layer selection {selection!r}; choose from {LAYER_SELECTIONS}")
    return pooling, selection  # type: ignore[return-value]
