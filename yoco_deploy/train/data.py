"""GLUE tasks and local data: examples, the held-out search split, metrics.

Three sources give the same ``TaskData``: the hub (``datasets``' ``glue``), a local GLUE
directory of TSV files (``train.tsv``, ``dev.tsv`` as GLUE ships them), and CSV/JSON
files with named text and label columns. A *search split* is held out of train (seeded)
for stage II; dev serves only the final report.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from yoco_deploy.errors import YocoError


class DataError(YocoError):
    """A task or data directory is missing, malformed or unknown."""


@dataclass(frozen=True)
class Task:
    name: str
    text_a: str  # hub column names
    text_b: str | None
    labels: tuple[str, ...] | None  # None: regression
    metric: str  # the task's main metric
    tsv: tuple[str | int, str | int | None, str | int]  # GLUE TSV columns (name or index)
    tsv_header: bool = True
    dev_file: str = "dev.tsv"
    names: tuple[str, ...] | None = None  # what each class means (GLUE's names), else labels

    @property
    def num_labels(self) -> int:
        return len(self.labels) if self.labels else 1

    @property
    def label_names(self) -> tuple[str, ...] | None:
        """Class names in class order, for id2label; None for a regression task."""
        return self.names or self.labels


def _load_tasks() -> dict[str, Task]:
    """GLUE's tasks from ``data/glue_tasks.json``: hub columns, label values in its TSV
    files, the class names the hub's glue dataset gives, the TSV columns (name or index)."""
    path = Path(__file__).parent.parent / "data" / "glue_tasks.json"
    rows = json.loads(path.read_text())
    tuples = {"labels", "tsv", "names"}
    return {
        row["name"]: Task(**{k: tuple(v) if k in tuples and v else v for k, v in row.items()})
        for row in rows
    }


TASKS = _load_tasks()
ALIASES = {"sst-2": "sst2", "sts-b": "stsb"}


def get_task(name: str) -> Task:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in TASKS:
        raise DataError(
            f"unknown task {name!r}; known: {', '.join(TASKS)} (or use --data-dir "
            "with CSV/JSON files and --text-columns/--label-column)"
        )
    return TASKS[key]


@dataclass(frozen=True)
class Examples:
    text_a: tuple[str, ...]
    text_b: tuple[str, ...] | None
    labels: np.ndarray  # int64 classes or float32 scores

    def __len__(self) -> int:
        return len(self.text_a)

    def subset(self, idx: np.ndarray) -> Examples:
        b = tuple(self.text_b[i] for i in idx) if self.text_b is not None else None
        return Examples(tuple(self.text_a[i] for i in idx), b, self.labels[idx])


GLUE_HUB = "nyu-mll/glue"


@dataclass(frozen=True)
class TaskData:
    task: Task
    train: Examples
    search: Examples
    dev: Examples
    source: str = GLUE_HUB  # the hub dataset, or the local folder the files came from


def split_search(train: Examples, fraction: float, seed: int) -> tuple[Examples, Examples]:
    if not 0 < fraction < 1:
        raise DataError(f"search fraction must be in (0, 1), got {fraction}")
    order = np.random.default_rng(seed).permutation(len(train))
    n = max(1, round(fraction * len(train)))
    return train.subset(np.sort(order[n:])), train.subset(np.sort(order[:n]))


def labelled_by(task: Task, values: list, where: str) -> Task:
    """The task as its training data labels it. GLUE's own values, class indices or
    GLUE's class names keep the task and its class order; other words (a CSV whose labels
    are "neg" and "pos") become its labels and class names, in sorted order, so
    predictions come out as those words. An F1 task needs to know its positive class, so
    it takes only GLUE's values or names."""
    if task.labels is None:
        return task
    found = sorted({str(v).strip() for v in values})
    known = set(task.labels) | {str(i) for i in range(len(task.labels))}
    if set(found) <= known:
        return task
    if task.names and set(found) <= set(task.names):
        return replace(task, labels=task.names)  # the names in GLUE's order
    if task.metric == "f1":
        raise DataError(
            f"{where}: task {task.name} scores F1 of its positive class, so its labels must "
            f"be {list(task.labels)} or {list(task.names or ())} in that order (class 1 is "
            f"the positive one), not {found[:8]}"
        )
    if len(found) != task.num_labels:
        shown = ", ".join(map(repr, found[:8])) + (", ..." if len(found) > 8 else "")
        raise DataError(
            f"{where}: the labels {shown} are {len(found)} classes, but task {task.name} has "
            f"{task.num_labels} ({', '.join(task.labels)}); relabel the data or pick a task "
            f"with {len(found)} classes"
        )
    return replace(task, labels=tuple(found), names=tuple(found))


def _label_array(values: list, task: Task, where: str) -> np.ndarray:
    if task.labels is None:
        try:
            return np.asarray([float(v) for v in values], dtype=np.float32)
        except ValueError as err:
            raise DataError(f"{where}: a score is not a number ({err})") from None
    index = {label: i for i, label in enumerate(task.labels)}
    out = []
    for v in values:
        key = str(v).strip()
        if key not in index and key.isdigit() and int(key) < len(task.labels):
            out.append(int(key))
        elif key in index:
            out.append(index[key])
        else:
            raise DataError(f"{where}: label {key!r} is not one of {list(task.labels)}")
    return np.asarray(out, dtype=np.int64)


def read_glue_tsv(path: Path, task: Task) -> Examples:
    """A GLUE TSV file (quotes are text, not quoting)."""
    a, b, raw = _glue_tsv_columns(path, task)
    return Examples(a, b, _label_array(raw, task, str(path)))


def _glue_tsv_columns(path: Path, task: Task) -> tuple[tuple[str, ...], tuple | None, list]:
    csv.field_size_limit(sys.maxsize)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    except OSError as err:
        raise DataError(f"cannot read {path}: {err.strerror}") from None
    if not rows:
        raise DataError(f"{path} is empty")
    a_col, b_col, y_col = task.tsv
    if task.tsv_header:
        header, rows = rows[0], rows[1:]
        try:
            a_col, y_col = header.index(a_col), header.index(y_col)
            b_col = header.index(b_col) if b_col is not None else None
        except ValueError:
            raise DataError(
                f"{path}: expected GLUE {task.name} columns {list(task.tsv)}, found {header}"
            ) from None
    width = max(c for c in (a_col, b_col, y_col) if c is not None)
    complete = [r for r in rows if len(r) > width]  # GLUE has a few malformed lines
    if not complete:
        raise DataError(f"{path}: no complete rows")
    if len(complete) < len(rows):
        print(
            f"note: {path}: skipped {len(rows) - len(complete)} of {len(rows)} rows with "
            f"fewer than {width + 1} columns",
            file=sys.stderr,
        )
    rows = complete
    text_b = tuple(r[b_col] for r in rows) if b_col is not None else None
    return tuple(r[a_col] for r in rows), text_b, [r[y_col] for r in rows]


def _table_columns(
    path: Path, text_columns: list[str], label_column: str
) -> tuple[tuple[str, ...], tuple | None, list]:
    """CSV or JSON (lines) with named columns, through ``datasets`` (works offline)."""
    from datasets import load_dataset

    kind = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json"}.get(path.suffix)
    if kind is None:
        raise DataError(f"{path}: use .csv, .tsv, .json or .jsonl")
    extra = {"delimiter": "\t"} if path.suffix == ".tsv" else {}
    try:
        table = load_dataset(kind, data_files=str(path), split="train", **extra)
    except Exception as err:  # datasets raises many types for unreadable files
        raise DataError(f"cannot read {path}: {err}") from None
    missing = [c for c in [*text_columns, label_column] if c not in table.column_names]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}; has {table.column_names}")
    b = tuple(str(x) for x in table[text_columns[1]]) if len(text_columns) > 1 else None
    return tuple(str(x) for x in table[text_columns[0]]), b, list(table[label_column])


def _find(data_dir: Path, stem: str) -> Path | None:
    for suffix in (".tsv", ".csv", ".jsonl", ".json"):
        if (data_dir / f"{stem}{suffix}").is_file():
            return data_dir / f"{stem}{suffix}"
    return None


def load_task_as_configured(task_name: str, data_dir, settings: Mapping[str, Any]) -> TaskData:
    """The splits a training config makes (``TrainConfig.model_dump()``, or the dict a
    super-BERT's checkpoint recorded of it): the trainer and search must see the same
    search split."""
    return load_task(
        task_name,
        data_dir,
        search_fraction=settings.get("search_fraction", 0.1),
        seed=split_seed_of(settings),
        text_columns=settings.get("text_columns"),
        label_column=settings.get("label_column"),
        max_train=settings.get("max_train"),
    )


def split_seed_of(settings: Mapping[str, Any]) -> int:
    """The seed of a config's train subset and search split (``split_seed``, else ``seed``)."""
    split_seed = settings.get("split_seed")
    return settings.get("seed", 0) if split_seed is None else split_seed


def load_task(
    task_name: str,
    data_dir: Path | None = None,
    search_fraction: float = 0.1,
    seed: int = 0,
    text_columns: list[str] | None = None,
    label_column: str | None = None,
    max_train: int | None = None,
) -> TaskData:
    """Train / search / dev for a task, from the hub or from ``data_dir``."""
    task = get_task(task_name)
    if data_dir is not None:
        data_dir = Path(data_dir)
        if not data_dir.is_dir():
            what = "is a file, not a folder" if data_dir.exists() else "does not exist"
            raise DataError(f"data directory {data_dir} {what}")
        train_path = _find(data_dir, "train")
        dev_path = _find(data_dir, Path(task.dev_file).stem) or _find(data_dir, "dev")
        if train_path is None or dev_path is None:
            raise DataError(f"{data_dir} needs train and dev files (.tsv, .csv or .json)")
        if text_columns:
            cols = (text_columns, label_column or "label")
            read = lambda p: _table_columns(p, *cols)  # noqa: E731
        elif train_path.suffix == ".tsv":
            read = lambda p: _glue_tsv_columns(p, task)  # noqa: E731
        else:
            cols = ([task.text_a] + ([task.text_b] if task.text_b else []), "label")
            read = lambda p: _table_columns(p, *cols)  # noqa: E731
        (ta, tb, traw), (da, db, draw) = read(train_path), read(dev_path)
        task = labelled_by(task, traw, str(train_path))  # words as labels name the classes
        train = Examples(ta, tb, _label_array(traw, task, str(train_path)))
        dev = Examples(da, db, _label_array(draw, task, str(dev_path)))
    else:
        train, dev = _load_hub(task)
    if max_train is not None and len(train) > max_train:
        idx = np.random.default_rng(seed).permutation(len(train))[:max_train]
        train = train.subset(np.sort(idx))
    train, search = split_search(train, search_fraction, seed)
    source = str(Path(data_dir).resolve()) if data_dir is not None else GLUE_HUB
    return TaskData(task, train, search, dev, source)


def _load_hub(task: Task) -> tuple[Examples, Examples]:
    from datasets import load_dataset

    try:
        ds = load_dataset(GLUE_HUB, task.name)
    except Exception as err:
        raise DataError(
            f"cannot load {GLUE_HUB}/{task.name} from the hub ({str(err)[:120]}); pass "
            "--data-dir with local GLUE TSV or CSV/JSON files"
        ) from None
    dev_split = "validation_matched" if task.name == "mnli" else "validation"

    def convert(split) -> Examples:
        b = tuple(split[task.text_b]) if task.text_b else None
        labels = np.asarray(split["label"], dtype=np.float32 if task.labels is None else np.int64)
        return Examples(tuple(split[task.text_a]), b, labels)

    return convert(ds["train"]), convert(ds[dev_split])


# ---- metrics -------------------------------------------------------------------------------


def compute_metrics(task: Task, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The GLUE metrics of a task; ``predictions`` are logits."""
    if task.labels is None:
        from scipy.stats import pearsonr, spearmanr

        scores = predictions.reshape(-1)
        return {
            "pearson": float(pearsonr(scores, labels).statistic),
            "spearman": float(spearmanr(scores, labels).statistic),
        }
    from sklearn.metrics import f1_score, matthews_corrcoef

    pred = predictions.argmax(-1)
    out = {"accuracy": float((pred == labels).mean())}
    if task.metric == "f1":
        out["f1"] = float(f1_score(labels, pred))
    if task.metric == "mcc":
        out["mcc"] = float(matthews_corrcoef(labels, pred))
    return out


def trim_padding(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Drop the trailing columns that are padding in every row of the batch.

    The outputs do not change (padding is masked), but a batch of short sentences stops
    paying for ``max_seq_len``: on SST-2 at 64 tokens this is most of the compute.
    """
    mask = np.asarray(batch["attention_mask"])
    used = np.flatnonzero(mask.any(axis=0))
    width = int(used[-1]) + 1 if len(used) else 1
    # only the token-aligned arrays (same shape as the mask), never e.g. (n, k) labels
    return {k: (v[:, :width] if np.shape(v) == mask.shape else v) for k, v in batch.items()}


def to_tensors(batch: Mapping[str, np.ndarray]) -> dict:
    import torch

    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in batch.items()}


def encode(tokenizer, examples: Examples, max_len: int) -> dict[str, np.ndarray]:
    """Token ids, masks and segment ids, padded to ``max_len``."""
    b = list(examples.text_b) if examples.text_b is not None else None
    enc = tokenizer(
        list(examples.text_a),
        b,
        truncation=True,
        max_length=max_len,
        padding="max_length",
        return_tensors="np",
    )
    out = {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask")}
    out["token_type_ids"] = enc.get("token_type_ids", np.zeros_like(out["input_ids"])).astype(
        np.int64
    )
    out["labels"] = examples.labels
    return out
