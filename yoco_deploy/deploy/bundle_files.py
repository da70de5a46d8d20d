"""A bundle folder on disk: its name, the files beside model.onnx (a stock config, the
tokenizer cut at the timed length, the model card, a Triton model repository) and the
manifest, written atomically."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

from yoco_deploy.arch import Arch
from yoco_deploy.deploy import model_card, triton
from yoco_deploy.deploy.budgets import Target
from yoco_deploy.export import metadata as onnx_metadata
from yoco_deploy.manifest import BundleManifest
from yoco_deploy.runtime import SessionSpec
from yoco_deploy.util.atomic import staged_dir, write_text
from yoco_deploy.util.hashing import file_sha256


def bundle_name(target: Target, measured_ms: float, metric: dict, arch: Arch) -> str:
    value = metric["value"]
    return f"{target.name}@{measured_ms:.1f}ms_{metric['name']}@{value:.3f}_{arch.arch_id}"


def class_names(config, task) -> list[str]:
    """The model's class names in class order (its config's id2label, which training set
    from the task); none for a regression task."""
    if task.labels is None:
        return []
    return [str(config.id2label.get(i, i)) for i in range(task.num_labels)]


def limit_tokenizer(folder: Path, seq_len: int) -> None:
    """The bundle's tokenizer stops at the length its latency was measured at: a longer
    input would run at a latency nobody measured (transformers reads model_max_length from
    tokenizer_config.json; the tokenizers library reads tokenizer.json's truncation)."""
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text()) if path.is_file() else {}
    config["model_max_length"] = seq_len
    config["yoco_note"] = f"truncated to {seq_len} tokens: the length this bundle was timed at"
    write_text(path, json.dumps(config, indent=2) + "\n")
    fast = folder / "tokenizer.json"
    if fast.is_file():  # plain `tokenizers` users read truncation from the file itself
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(fast))
        tokenizer.enable_truncation(seq_len)
        write_text(fast, tokenizer.to_str())


def write_bundle(
    bundle: Path, super_bert, arch: Arch, tokenizer, manifest: BundleManifest, onnx_path: Path
) -> BundleManifest:
    """The bundle folder, staged beside its final place (a failure leaves the previous
    bundle intact); the manifest as written, with the file's digest."""
    from yoco_deploy.model.extract import onnx_config

    with staged_dir(bundle) as stage:
        shutil.copyfile(onnx_path, stage / "model.onnx")
        # the ONNX file carries the weights: a stock config and the tokenizer beside it
        config = onnx_config(super_bert, arch)
        write_text(stage / "config.json", json.dumps(config, indent=2) + "\n")
        tokenizer.save_pretrained(stage)
        limit_tokenizer(stage, manifest.seq_len)
        fast = stage / "tokenizer.json"  # what load_bundle reads, checked against this
        manifest = replace(manifest, tokenizer_sha256=file_sha256(fast) if fast.is_file() else None)
        manifest = replace(manifest, triton=triton.record(manifest.name or bundle.name))
        onnx_metadata.set_digest(stage / "model.onnx", manifest.to_dict())
        manifest = replace(manifest, onnx_sha256=file_sha256(stage / "model.onnx"))
        session = SessionSpec.from_dict(manifest.session or {})
        triton.write_repository(stage, manifest.triton, session, manifest.batch)
        write_text(stage / "README.md", model_card.render(manifest))
        manifest.write(stage)
        read_back(stage)
    return manifest


def read_back(folder: Path) -> None:
    """The bundle as a user will open it, before it replaces anything: every check of
    load_bundle passes on what was just written."""
    from yoco_deploy.bundle import load_bundle

    load_bundle(folder)
