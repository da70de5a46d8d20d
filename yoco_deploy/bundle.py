"""A shipped bundle as a Python object: classify text with onnxruntime and tokenizers only.

    from yoco_deploy import load_bundle
    bundle = load_bundle("bundles/this-machine@0.6ms_accuracy@0.954_31aca7de2a")
    bundle.classify(["a gripping, funny film", "a dull mess"])

The session is built from the manifest's recorded "session" (the settings its latency
was measured with); inputs are truncated to the sequence length it was timed at. This
module imports neither torch nor transformers, so it works where only onnxruntime,
tokenizers and numpy are installed.

Nothing in the folder is trusted that does not match what ship wrote: model.onnx against
the manifest's ``onnx_sha256``, the manifest against the digest model.onnx records, the
tokenizer against ``tokenizer_sha256`` and config.json's class names against the
manifest's; the graph must take token ids and give one row per text. Each mismatch is a
``BundleError`` naming the file.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from yoco_deploy import manifest as manifest_file
from yoco_deploy.errors import YocoError
from yoco_deploy.manifest import BundleManifest, ManifestError

INPUTS = ("input_ids", "attention_mask", "token_type_ids")
RESHIP = "restore the bundle's files as ship wrote them, or re-ship the bundle"


class BundleError(YocoError):
    """A folder is not a readable bundle, or not the bundle ship wrote."""


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
    manifest.json, each checked against the others before anything is classified."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise BundleError(f"{self.path} is not a bundle folder (ship writes one)")
        written = self._read_manifest()
        self.labels = self._labels(self._json("config.json"))
        self.seq_len = self.manifest.seq_len
        self.session_spec = self._session_spec()
        self.session = self._open_session(written)
        self.inputs = self._check_graph()
        self.tokenizer = self._open_tokenizer()

    def _read_manifest(self) -> dict[str, Any]:
        """The manifest, typed in ``self.manifest``; returned as written (its digest)."""
        try:
            written = manifest_file.read_json(self.path)
            self.manifest = BundleManifest.from_dict(written, str(self.path / manifest_file.FILE))
        except ManifestError as err:
            raise BundleError(str(err)) from None
        return written

    def _session_spec(self):
        from yoco_deploy.runtime import RunnerError, SessionSpec, recorded_session

        try:
            if self.manifest.session is not None:  # the settings its latency was measured with
                return SessionSpec.from_dict(self.manifest.session)
            return recorded_session(self.manifest.machine or {})  # before sessions were recorded
        except (RunnerError, TypeError, AttributeError) as err:
            raise BundleError(
                f"{self.path}/manifest.json has an unreadable session record: {err}"
            ) from None

    def _open_session(self, written: dict[str, Any]):
        """model.onnx, once it is the file ship wrote with this manifest."""
        from yoco_deploy.runtime import RunnerError

        model = self.path / "model.onnx"
        self._check_file(model, self.manifest.onnx_sha256, "onnx_sha256")
        try:
            session = self.session_spec.load(model)
        except RunnerError as err:
            raise BundleError(f"{self.path}: {err}") from None
        self._check_digest(session, written)
        return session

    def _open_tokenizer(self):
        """tokenizer.json, truncating at the length the latency was measured at."""
        from tokenizers import Tokenizer

        path = self.path / "tokenizer.json"
        if self.manifest.tokenizer_sha256 is not None:  # older bundles did not record it
            self._check_file(path, self.manifest.tokenizer_sha256, "tokenizer_sha256")
        try:
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as err:  # tokenizers raises its own exception type
            raise BundleError(f"{path} cannot be read: {err}") from None
        tokenizer.enable_truncation(self.seq_len)  # what was timed, no longer
        tokenizer.enable_padding(pad_id=tokenizer.token_to_id("[PAD]") or 0)
        return tokenizer

    # ---- the checks on load ------------------------------------------------------------

    def _json(self, name: str) -> dict[str, Any]:
        from yoco_deploy.util.user_file import parse_json

        try:
            text = (self.path / name).read_text(encoding="utf-8")
        except OSError:
            raise BundleError(f"{self.path} is not a bundle: no {name} (ship writes one)") from None
        except UnicodeDecodeError:
            raise BundleError(f"{self.path / name} is not UTF-8 text: {RESHIP}") from None
        data = parse_json(text, BundleError, str(self.path / name))
        if not isinstance(data, dict):
            raise BundleError(f"{self.path / name} is not a JSON object: {RESHIP}")
        return data

    def _labels(self, config: dict[str, Any]) -> dict[int, str]:
        """config.json's class names, which must be the ones the manifest recorded."""
        where = self.path / "config.json"
        names = config.get("id2label") or {}
        if not isinstance(names, dict) or not all(
            _class_number(k) is not None and isinstance(v, str) for k, v in names.items()
        ):
            raise BundleError(
                f'{where}: id2label must map class numbers to names ({{"0": "negative", ...}}), '
                f"got {_preview(names)}: {RESHIP}"
            )
        labels = {int(k): v for k, v in names.items()}
        recorded = dict(enumerate(self.manifest.labels))
        if recorded and labels != recorded:
            raise BundleError(
                f"{where} names the classes {_preview(list(labels.values()))} but manifest.json "
                f"recorded {_preview(self.manifest.labels)}: {RESHIP}"
            )
        return labels

    def _check_file(self, path: Path, recorded: str, key: str) -> None:
        try:
            actual = verified_sha256(path)
            if actual != recorded:  # never refused on the cache's word alone
                actual = verified_sha256(path, fresh=True)
        except OSError as err:
            raise BundleError(f"{path} cannot be read: {err.strerror}: {RESHIP}") from None
        if actual != recorded:
            raise BundleError(
                f"{path} is not the file this bundle shipped (its sha256 differs from "
                f"manifest.json's {key}): {RESHIP}"
            )

    def _check_digest(self, session, written: dict[str, Any]) -> None:
        """The manifest is the one written with this model.onnx: the file records the
        manifest's digest (bundles from before it was recorded have none)."""
        from yoco_deploy.export.metadata import DIGEST_KEY, manifest_digest

        recorded = session.get_modelmeta().custom_metadata_map.get(DIGEST_KEY)
        if recorded is not None and recorded != manifest_digest(written):
            raise BundleError(
                f"{self.path / manifest_file.FILE} is not the manifest written with this "
                f"model.onnx (its digest differs from the one model.onnx records): {RESHIP}"
            )

    def _check_graph(self) -> set[str]:
        """A graph that takes token ids and gives one row of logits per text."""
        where = self.path / "model.onnx"
        inputs = {i.name: i for i in self.session.get_inputs()}
        wrong = [n for n, i in inputs.items() if n not in INPUTS or i.type != "tensor(int64)"]
        if "input_ids" not in inputs or wrong:
            raise BundleError(
                f"{where} takes {', '.join(sorted(inputs))} where a bundle takes int64 "
                f"{', '.join(INPUTS)}: {RESHIP}"
            )
        shape = self.session.get_outputs()[0].shape
        classes = len(self.manifest.labels) or None  # none recorded: any count of classes
        if len(shape) != 2 or not isinstance(shape[1], int) or classes not in (None, shape[1]):
            need = f"this bundle's {classes} classes need [batch, {classes}]"
            raise BundleError(
                f"{where} gives logits of shape {shape} where "
                f"{need if classes else 'a bundle gives [batch, classes]'}: {RESHIP}"
            )
        return set(inputs)

    # ---- classification ----------------------------------------------------------------

    def logits(self, texts: list[str] | str, batch_size: int = 32) -> np.ndarray:
        """Logits for ``texts`` (shape: texts x classes), batch by batch."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        _check_texts(texts, batch_size)
        out = []
        for start in range(0, len(texts), batch_size):
            encodings = self.tokenizer.encode_batch(list(texts[start : start + batch_size]))
            feeds = {
                "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
            }
            feeds = {k: v for k, v in feeds.items() if k in self.inputs}
            try:
                out.append(self.session.run(None, feeds)[0])
            except Exception as err:  # ORT raises its own exception types
                raise BundleError(
                    f"{self.path / 'model.onnx'} failed on texts {start + 1} to "
                    f"{start + len(encodings)}: {' '.join(str(err).split())[:300]}"
                ) from None
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)

    def classify(self, texts: list[str] | str, batch_size: int = 32) -> list[Prediction]:
        """Class, name and probability per text; a regression bundle (one output) gives
        its score as ``score`` under the name "score"."""
        logits = self.logits(texts, batch_size)
        if logits.size == 0:
            return []
        bad = np.flatnonzero(~np.isfinite(logits).all(axis=1))
        if bad.size:  # a damaged model; its "class" would be argmax of NaN, i.e. class 0
            raise BundleError(
                f"{self.path / 'model.onnx'} gave logits that are not numbers (NaN or "
                f"infinite) for text {int(bad[0]) + 1}"
                f"{f' and {bad.size - 1} more' if bad.size > 1 else ''}: {RESHIP}"
            )
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


def _check_texts(texts: list, batch_size: int) -> None:
    """Texts there is something to classify in, in batches of at least one."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise BundleError(f"batch_size must be a whole number of at least 1, got {batch_size!r}")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise BundleError(f"text {i + 1} is {type(text).__name__}, not a string")
        if not text.strip():
            raise BundleError(
                f"text {i + 1} of {len(texts)} is empty: there is nothing to classify in it; "
                "leave it out"
            )


def _class_number(key: Any) -> int | None:
    try:
        return int(key) if isinstance(key, str) else None
    except ValueError:
        return None


def _preview(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---- hashing once per file, not once per load ---------------------------------------------

CACHE_ENV = "YOCO_CACHE_DIR"  # where digests of verified files are kept; empty: nowhere
CACHE_ENTRIES = 256
# a file modified within the timestamp granularity of its last write could keep its times:
# only files this much older than their hashing are remembered
SETTLED_NS = 2_000_000_000


def _cache_path() -> Path | None:
    root = os.environ.get(CACHE_ENV)
    if root is None:
        try:
            root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        except RuntimeError:  # no home directory: nothing is kept
            return None
        root = str(Path(root) / "yoco-deploy")
    return Path(root) / "verified-files.json" if root else None


def _stat_key(path: Path) -> str:
    """The file as the OS knows it: a new file, a write or a reset mtime all change it
    (the ctime, which no user call can set back, changes with each)."""
    st = path.stat()
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}"


def _read_cache(cache: Path | None) -> dict[str, str]:
    try:
        data = json.loads(cache.read_text()) if cache else {}
    except (OSError, ValueError):
        return {}  # no cache, or a damaged one: hash again
    return data if isinstance(data, dict) else {}


def _remember(cache: Path, known: dict[str, str], key: str, digest: str) -> None:
    entries = {**{k: v for k, v in known.items() if k != key}, key: digest}
    entries = dict(list(entries.items())[-CACHE_ENTRIES:])
    tmp = cache.with_name(f".{cache.name}.tmp-{os.getpid()}")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(entries))
        tmp.replace(cache)
    except OSError:  # a read-only home: every load hashes, nothing else changes
        with suppress(OSError):
            tmp.unlink(missing_ok=True)


def verified_sha256(path: Path, fresh: bool = False) -> str:
    """sha256 of ``path``; a file hashed before, unchanged since (same inode, size, mtime
    and ctime), is not read again unless ``fresh``."""
    from yoco_deploy.util.hashing import file_sha256

    cache = _cache_path()
    known = _read_cache(cache)
    before = _stat_key(path)
    if not fresh and isinstance(known.get(before), str):
        return known[before]
    digest = file_sha256(path)
    st = path.stat()
    settled = time.time_ns() - max(st.st_mtime_ns, st.st_ctime_ns) > SETTLED_NS
    if cache is not None and settled and _stat_key(path) == before:
        _remember(cache, known, before, digest)
    return digest


def load_bundle(path: str | Path) -> Bundle:
    """Open a bundle written by `ship` (or `search`) for classification, after checking
    that its files are the ones ship wrote."""
    return Bundle(path)
