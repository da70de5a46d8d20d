"""A Triton Inference Server model repository inside every bundle.

``BUNDLE/triton/<model>/config.pbtxt`` and ``BUNDLE/triton/<model>/1/model.onnx`` (a hard
link to the bundle's ``model.onnx``, a copy where the file system has none): point
``tritonserver --model-repository BUNDLE/triton`` at it. The configuration is written
from the ONNX file itself (input and output names, types and dynamic axes), the target's
shape (``max_batch_size`` and the dynamic batcher's preferred size) and the session the
bundle was timed with (threads and graph optimization, as the onnxruntime backend takes
them; the backend has no setting for spinning or denormal flushing, so Triton runs with
ONNX Runtime's defaults for those, and the config says so).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

from yoco_deploy.runtime import SessionSpec
from yoco_deploy.util.atomic import write_text

TRITON = "triton"
CONFIG = "config.pbtxt"
VERSION = "1"  # Triton's model version folder

# ONNX element types as Triton's data types
DATA_TYPES = {1: "TYPE_FP32", 6: "TYPE_INT32", 7: "TYPE_INT64", 9: "TYPE_BOOL", 10: "TYPE_FP16"}
# the onnxruntime backend's optimization { graph { level } }: -1 basic, 1 extended, 2 none;
# left out, every optimization is on (our "all")
GRAPH_LEVELS = {"basic": -1, "extended": 1, "disabled": 2}


def model_name(bundle_name: str) -> str:
    """A Triton model name from the bundle's: letters, digits, '-' and '_' only."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", bundle_name).strip("_") or "model"


def io_specs(onnx_path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(inputs, outputs): name, Triton data type and dims without the batch axis (-1 for
    a dynamic axis), read from the ONNX graph."""
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph

    def spec(value) -> dict[str, Any]:
        tensor = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim]
        return {"name": value.name, "data_type": DATA_TYPES[tensor.elem_type], "dims": dims[1:]}

    initializers = {i.name for i in graph.initializer}
    inputs = [spec(v) for v in graph.input if v.name not in initializers]
    return inputs, [spec(v) for v in graph.output]


def config_text(name: str, onnx_path: Path, session: SessionSpec, batch: int) -> str:
    """The model's ``config.pbtxt`` (protobuf text format of Triton's ``ModelConfig``)."""
    inputs, outputs = io_specs(onnx_path)
    gpu = session.device == "cuda"
    lines = [
        f'name: "{name}"',
        'backend: "onnxruntime"',
        f"max_batch_size: {max(1, batch)}",
        *(_tensor("input", t) for t in inputs),
        *(_tensor("output", t) for t in outputs),
        f"instance_group [{{ kind: {'KIND_GPU' if gpu else 'KIND_CPU'} count: 1 }}]",
    ]
    if batch > 1:  # requests are gathered into the batch the budget was set at
        lines.append(
            f"dynamic_batching {{ preferred_batch_size: [{batch}] "
            "max_queue_delay_microseconds: 1000 }"
        )
    level = GRAPH_LEVELS.get(session.graph_optimization)
    if level is not None:
        lines.append(f"optimization {{ graph {{ level: {level} }} }}")
    if session.threads:
        lines += [_parameter("intra_op_thread_count", session.threads),
                  _parameter("inter_op_thread_count", 1)]  # fmt: skip
    note = (
        f"# timed with: {session.describe()}; the onnxruntime backend has no setting for\n"
        "# spinning or denormal flushing, so Triton runs with ONNX Runtime's defaults there\n"
    )
    return note + "\n".join(lines) + "\n"


def _tensor(kind: str, spec: dict[str, Any]) -> str:
    dims = ", ".join(str(d) for d in spec["dims"])
    return f'{kind} [{{ name: "{spec["name"]}" data_type: {spec["data_type"]} dims: [{dims}] }}]'


def _parameter(key: str, value: Any) -> str:
    return f'parameters {{ key: "{key}" value: {{ string_value: "{value}" }} }}'


def record(bundle_name: str) -> dict[str, str]:
    """What the manifest says of the repository (before the files exist: the manifest's
    digest, which model.onnx carries, covers it)."""
    return {"repository": TRITON, "model": model_name(bundle_name)}


def write_repository(bundle: Path, where: dict[str, str], session: SessionSpec, batch: int):
    """``bundle/triton/<model>/`` as ``where`` (``record``) names it, once model.onnx is
    final: its version folder holds a hard link to it, or a copy where links fail."""
    folder = Path(bundle) / where["repository"] / where["model"]
    (folder / VERSION).mkdir(parents=True, exist_ok=True)
    model = folder / VERSION / "model.onnx"
    model.unlink(missing_ok=True)
    try:
        os.link(Path(bundle) / "model.onnx", model)
    except OSError:  # no hard links here (another file system, a FAT stick)
        shutil.copyfile(Path(bundle) / "model.onnx", model)
    write_text(folder / CONFIG, config_text(where["model"], model, session, batch))
    return folder
