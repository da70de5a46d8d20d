"""The sub-BERTs a profile times, as files: exported in the deploy format, or cut out of
the max sub-BERT's exported graph (``yoco_deploy/export/slice_graph.py``). Latency
depends on shapes, not weights, so they come from a randomly initialised model of the
right dimensions."""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from yoco_deploy.arch import Arch
from yoco_deploy.device.profile_store import reference_arch
from yoco_deploy.space import SearchSpace


def random_super_bert(space: SearchSpace, seed: int = 0):
    """A super-BERT with random weights and the space's dimensions (for timing only)."""
    import torch
    from transformers import BertForSequenceClassification

    from yoco_deploy.model.super_bert import SuperBert

    config = space.dims.bert_config()
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config).eval()
    with torch.no_grad():
        # distinct values everywhere, as in a trained model: the exporter merges equal
        # tensors (all-zero biases), which puts nodes into the graph that a shipped
        # model's has not
        for param in model.parameters():
            if param.dim() == 1:
                param.add_(torch.randn_like(param) * 0.02)
    return SuperBert(model, space).eval()


class ArtifactBuilder:
    """Sub-BERTs in the deploy format, in a work directory, on demand.

    What is timed needs the right graph, not checked numbers: the export is not validated
    against PyTorch unless ``validate`` (ship validates what it ships; the profile's
    weights are random). For fused and int8 graphs, the max sub-BERT is exported once
    and every other sub-BERT is cut out of its graph (``export/slice_graph.py``; checked
    on the reference first, ``method`` says which was used). Otherwise ``prepare``
    exports a stretch of sub-BERTs in ``workers`` processes at once, before that stretch
    is timed, so exports never run beside a timing; ``build`` alone exports in this
    process."""

    def __init__(
        self,
        space: SearchSpace,
        fmt: str,
        work: Path,
        seed: int = 0,
        validate: bool = False,
        workers: int | None = None,
        slicing: bool = True,
    ):
        self.space, self.fmt, self.seed, self.validate = space, fmt, seed, validate
        # cut from the max sub-BERT's graph (export/slice_graph.py) where the format allows
        self.slicing = slicing and fmt in SLICED_FORMATS and not validate
        self.slicer = None
        self.method = "export"  # how the timed graphs were made: "export" or "cut"
        self.workers = workers if workers is not None else min(2, os.cpu_count() or 1)
        self.work = Path(work)
        self.built: dict[str, Path] = {}
        self._super_bert = None
        self._pool = None

    @property
    def super_bert(self):
        if self._super_bert is None:
            self._super_bert = random_super_bert(self.space, self.seed)
        return self._super_bert

    def build(self, arch: Arch) -> Path:
        """Export (or cut) once; later calls (a drift re-measurement) reuse the file."""
        if arch.arch_id not in self.built:
            if self.slicing:
                self._start_slicer()
            if arch.arch_id in self.built:  # the reference, exported to check the cuts
                pass
            elif self.slicer is not None:
                path = self.work / arch.arch_id / "model.cut.onnx"
                path.parent.mkdir(parents=True, exist_ok=True)
                cut = self.slicer.cut(arch, self.space.kept_layers(arch.depth))
                import onnx

                onnx.save(cut, str(path))
                self.built[arch.arch_id] = path
            else:
                self.built[arch.arch_id] = self._export(arch)
        return self.built[arch.arch_id]

    def _export(self, arch: Arch) -> Path:
        return _export_for_timing(
            self.super_bert, arch, self.work / arch.arch_id, self.fmt, self.validate
        )

    def _start_slicer(self) -> None:
        """Export the max sub-BERT and the reference; cut from the max one from now on if
        its cut of the reference is the exported reference's graph, node for node (else
        export every sub-BERT, as before)."""
        import onnx

        from yoco_deploy.export.slice_graph import GraphSlicer, SliceError, signature

        self.slicing = False  # decided once
        top, ref = self.space.max_arch(), reference_arch(self.space)
        top_path = self.work / "max" / "model.onnx"
        exported = _export_for_timing(self.super_bert, top, top_path.parent, self.fmt, False)
        ref_path = self.built.get(ref.arch_id) or self._export(ref)
        self.built[ref.arch_id] = ref_path
        dims = self.space.dims
        try:
            slicer = GraphSlicer(onnx.load(str(exported)), dims.num_layers, dims.num_heads,
                                 dims.head_dim)  # fmt: skip
            same = signature(slicer.cut(ref, self.space.kept_layers(ref.depth))) == signature(
                onnx.load(str(ref_path))
            )
        except SliceError:
            same = False
        self.slicer = slicer if same else None
        self.method = "cut" if same else "export"

    def prepare(self, archs: list[Arch]) -> None:
        """Export every arch not built yet, ``workers`` at a time; returns when all are.
        Cut graphs need no preparing (milliseconds each)."""
        if self.slicing or self.slicer is not None:
            return
        todo = list({a.arch_id: a for a in archs if a.arch_id not in self.built}.values())
        if self.workers < 2 or len(todo) < 2 or not self.worth_workers():
            for arch in todo:
                self.build(arch)
            return
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            # spawned, not forked: a fork of a process with torch's threads can hang
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_worker_start,
                initargs=(self.space, self.seed),
            )
        jobs = [
            (arch, self._pool.submit(_worker_export, arch, self.work / arch.arch_id, self.fmt,
                                     self.validate))
            for arch in todo
        ]  # fmt: skip
        for arch, job in jobs:
            self.built[arch.arch_id] = job.result()

    def worth_workers(self) -> bool:
        """A spawned worker takes seconds to start (torch's import, the random model):
        worth it for models whose export takes as long (MiniLM's: 4 s), not for a tiny
        test space's (a fraction of a second)."""
        if self._pool is not None:
            return True
        from yoco_deploy.costs import arch_costs

        return arch_costs(self.space.max_arch(), self.space.dims).params >= POOL_WORTH_PARAMS

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def release(self, arch_id: str) -> None:
        self.built.pop(arch_id, None)
        shutil.rmtree(self.work / arch_id, ignore_errors=True)
        if self.slicer is None:
            gc.collect()  # the exporter leaves large reference cycles behind (a cut none)


def _export_for_timing(super_bert, arch: Arch, out: Path, fmt: str, validate: bool) -> Path:
    from yoco_deploy.export.sub_bert import ExportOptions
    from yoco_deploy.export.sub_bert import export_sub_bert as export
    from yoco_deploy.export.to_onnx import OnnxSpec

    # validated (when asked) at one small shape: the weights are random
    spec = OnnxSpec(validation_shapes=((1, 16),))
    options = ExportOptions.for_format(
        fmt, int8_samples=4, save_model_dir=False, spec=spec, validate=validate
    )
    deploy = export(super_bert, arch, out, options).deploy_file
    for other in out.iterdir():  # a stretch of exports waits on disk: keep only what is timed
        if other != deploy and other.is_file():
            other.unlink()
    return deploy


_WORKER: dict[str, Any] = {}
SLICED_FORMATS = ("fused", "int8")  # the fused graphs export/slice_graph.py can cut
POOL_WORTH_PARAMS = 5_000_000


def _worker_start(space: SearchSpace, seed: int) -> None:
    import torch

    torch.set_num_threads(1)  # one export per core
    _WORKER["super_bert"] = random_super_bert(space, seed)


def _worker_export(arch: Arch, out: Path, fmt: str, validate: bool) -> Path:
    return _export_for_timing(_WORKER["super_bert"], arch, out, fmt, validate)


EXPORTS = ".exports"  # inside a profile (or remote bundle) folder


@contextlib.contextmanager
def export_work(folder: Path) -> Iterator[Path]:
    """Where sub-BERTs are exported before they are timed: ``FOLDER/.exports``, emptied
    when the work starts and removed when it ends. A killed profile once left its
    exports, hundreds of MB, in a system temp folder that nothing cleaned; here the next
    run of the same profile cleans them, and the profile's lock keeps the folder to one
    process."""
    work = Path(folder) / EXPORTS
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ---- profiling, locally -------------------------------------------------------------------
