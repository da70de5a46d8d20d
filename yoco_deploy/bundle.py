"""A shipped bundle as a Python object: classify text with onnxruntime and tokenizers only.

    from yoco_deploy import load_bundle
    bundle = load_bundle("bundles/this-machine@0.6ms_accuracy@0.954_31aca7de2a")
    bundle.classify(["a gripping, funny film", "a dull mess"])

The session is built from the manifest's recorded "session" (the settings its latency
was measured with); inputs are truncated to the sequence length it was timed at. This
module imports neither torch nor transformers, so it works where only onnxruntime,
tokenizers and numpy are installed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from yoco_deploy.errors import YocoError
from yoco_deploy.manifest import BundleManifest, ManifestError


class BundleError(YocoError):
    """A folder is not a readable bundle."""


@dataclass(frozen=True)
class Prediction:
    """One text's class: its index, its name (the config's id2label, else the index as a
    string), the softmax probability of that class, and the raw logits."""

    label: int
    name: str
    score: float
    logits: tuple[float, ...]


class Bundle:
    """A bundle folder written by `ship`: model.onnx, tokenizer.json, config.json and
    manifest.json."""

    def __init__(self, path: str | Path):
        from tokenizers import Tokenizer

        from yoco_deploy.device.runner import RunnerError, SessionSpec, recorded_session

        self.path = Path(path)
        if not self.path.is_dir():
            raise BundleError(f"{self.path} is not a bundle folder (ship writes one)")
        try:
            self.manifest = BundleManifest.read(self.path)
        except ManifestError as err:
            raise BundleError(str(err)) from None
        config = self._json("config.json")
        names = config.get("id2label") or {}
        self.labels = {int(k): str(v) for k, v in names.items()}
        self.seq_len = int(self.manifest.seq_len)
        try:
            if self.manifest.session is not None:  # the settings its latency was measured with
                self.session_spec = SessionSpec.from_dict(self.manifest.session)
            else:  # a bundle from before sessions were recorded
                self.session_spec = recorded_session(self.manifest.machine or {})
        except (RunnerError, TypeError, AttributeError) as err:
            raise BundleError(
                f"{self.path}/manifest.json has an unreadable session record: {err}"
            ) from None
        try:
            self.session = self.session_spec.load(self.path / "model.onnx")
        except RunnerError as err:
            raise BundleError(f"{self.path}: {err}") from None
        try:
            self.tokenizer = Tokenizer.from_file(str(self.path / "tokenizer.json"))
        except Exception as err:  # tokenizers raises its own exception type
            raise BundleError(f"{self.path}/tokenizer.json cannot be read: {err}") from None
        self.tokenizer.enable_truncation(self.seq_len)  # what was timed, no longer
        pad = self.tokenizer.token_to_id("[PAD]") or 0
        self.tokenizer.enable_padding(pad_id=pad)
        self.inputs = {i.name for i in self.session.get_inputs()}

    def _json(self, name: str) -> dict[str, Any]:
        try:
            data = json.loads((self.path / name).read_text())
        except OSError:
            raise BundleError(f"{self.path} is not a bundle: no {name} (ship writes one)") from None
        except ValueError as err:
            raise BundleError(f"{self.path / name} is not valid JSON: {err}") from None
        if not isinstance(data, dict):
            raise BundleError(f"{self.path / name} is not a JSON object")
        return data

    def logits(self, texts: list[str] | str, batch_size: int = 32) -> np.ndarray:
        """Logits for ``texts`` (shape: texts x classes), batch by batch."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = []
        for start in range(0, len(texts), batch_size):
            encodings = self.tokenizer.encode_batch(list(texts[start : start + batch_size]))
            feeds = {
                "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
            }
            feeds = {k: v for k, v in feeds.items() if k in self.inputs}
            out.append(self.session.run(None, feeds)[0])
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)

    def classify(self, texts: list[str] | str, batch_size: int = 32) -> list[Prediction]:
        """Class, name and probability per text; a regression bundle (one output) gives
        its score as ``score`` under the name "score"."""
        logits = self.logits(texts, batch_size)
        if logits.size == 0:
            return []
        if logits.shape[1] == 1:
            return [Prediction(0, "score", float(row[0]), (float(row[0]),)) for row in logits]
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = shifted / shifted.sum(axis=1, keepdims=True)
        return [
            Prediction(
                label=int(row.argmax()),
                name=self.labels.get(int(row.argmax()), str(int(row.argmax()))),
                score=float(p[row.argmax()]),
                logits=tuple(float(x) for x in row),
            )
            for row, p in zip(logits, probs, strict=True)
        ]


def load_bundle(path: str | Path) -> Bundle:
    """Open a bundle written by `ship` (or `search`) for classification."""
    return Bundle(path)
