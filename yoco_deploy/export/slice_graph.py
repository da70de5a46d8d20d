"""Sub-BERT graphs cut out of the max sub-BERT's deployable ONNX graph, for timing.

Profiling a device times dozens of sub-BERTs, and exporting each one (PyTorch export,
ONNX Runtime's fusions, int8 quantization) cost two thirds of a MiniLM profile. A
sub-BERT's fused (or int8) graph is the max sub-BERT's with fewer layers and narrower
tensors: the same nodes, layer for layer, with the attention's QKV columns, the output
projection's rows and the FFN's columns and rows cut to the sub-BERT's heads and width
(the prefixes that :func:`yoco_deploy.model.extract.extract` keeps), and each attention's
``num_heads`` set. Cutting takes milliseconds.

Latency depends on the graph, not on the weights, so this is for timing only: an int8
cut keeps the max model's per-channel scales (a fresh quantization of the smaller model
would compute its own), and ship still exports what it ships. That a cut is the graph
the exporter would write, node for node, is checked when a profile starts (against the
directly exported reference, :func:`signature`) and in tests/test_slice_graph.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from yoco_deploy.arch import Arch
from yoco_deploy.errors import ExportError

ATTENTION = ("Attention", "QAttention")
MATMUL = ("MatMul", "MatMulInteger")
GELU = ("BiasGelu", "FastGelu", "Gelu")


class SliceError(ExportError):
    """The graph is not one this module knows how to cut (another exporter's or fusion's)."""


@dataclass(frozen=True)
class _Layer:
    """One encoder layer of the max graph: what its width cuts touch."""

    input: str  # the residual stream entering the layer
    output: str  # ... and leaving it
    nodes: tuple[int, ...]  # indices into the graph's node list
    attention: int
    out_proj: int
    ffn_in: int
    ffn_out: int
    ffn_bias: tuple[int, int] | None  # (node, input index) of the FFN's bias, if separate
    ffn_scale: tuple[int, int] | None  # int8: (node, input index) of ffn_in's weight scales


class GraphSlicer:
    """Cuts sub-BERTs out of the max sub-BERT's graph ``model`` (an ``onnx.ModelProto``
    of a space with ``num_layers`` layers of ``heads`` heads of ``head_dim``)."""

    def __init__(self, model, num_layers: int, heads: int, head_dim: int):
        self.model, self.heads, self.head_dim = model, heads, head_dim
        graph = model.graph
        self.nodes = list(graph.node)
        self.inits = {t.name: t for t in graph.initializer}
        self.producer = {out: i for i, n in enumerate(self.nodes) for out in n.output}
        self.consumers: dict[str, list[int]] = {}
        for i, node in enumerate(self.nodes):
            for name in node.input:
                self.consumers.setdefault(name, []).append(i)
        norms = [i for i, n in enumerate(self.nodes) if n.op_type == "SkipLayerNormalization"]
        if len(norms) != 2 * num_layers:
            raise SliceError(
                f"expected {2 * num_layers} SkipLayerNormalization nodes (2 per layer), "
                f"found {len(norms)}: not a fused BERT graph"
            )
        stream = [self.nodes[norms[0]].input[1]]
        stream += [self.nodes[norms[2 * k + 1]].output[0] for k in range(num_layers)]
        self.layers = [self._layer(stream[k], stream[k + 1]) for k in range(num_layers)]

    def _layer(self, start: str, end: str) -> _Layer:
        downstream = self._downstream(start)
        nodes, todo = set(), [self.producer[end]]
        while todo:  # back from the layer's output, within what its input feeds
            i = todo.pop()
            if i in nodes or i not in downstream:
                continue
            nodes.add(i)
            todo += [self.producer[t] for t in self.nodes[i].input if t in self.producer]
        order = sorted(nodes)
        of = {ops: [i for i in order if self.nodes[i].op_type in ops]
              for ops in (ATTENTION, MATMUL, GELU)}  # fmt: skip
        if len(of[ATTENTION]) != 1 or len(of[MATMUL]) != 3 or len(of[GELU]) > 1:
            raise SliceError(
                "a layer of the graph is not one attention, three matrix products and a "
                f"GELU (found {len(of[ATTENTION])}, {len(of[MATMUL])}, {len(of[GELU])})"
            )
        out_proj, ffn_in, ffn_out = of[MATMUL]
        bias = None
        if of[GELU] and len(self.nodes[of[GELU][0]].input) > 1:
            bias = (of[GELU][0], 1)
        return _Layer(start, end, tuple(order), of[ATTENTION][0], out_proj, ffn_in, ffn_out,
                      bias, self._weight_scale(ffn_in))  # fmt: skip

    def _downstream(self, tensor: str) -> set[int]:
        seen, todo = set(), [tensor]
        while todo:
            for i in self.consumers.get(todo.pop(), []):
                if i not in seen:
                    seen.add(i)
                    todo += list(self.nodes[i].output)
        return seen

    def _weight_scale(self, matmul: int) -> tuple[int, int] | None:
        """An int8 product's per-channel weight scales: MatMulInteger -> Cast -> Mul(., S),
        where S = Mul(input scale, weight scales)."""
        if self.nodes[matmul].op_type != "MatMulInteger":
            return None
        (cast,) = self.consumers[self.nodes[matmul].output[0]]
        (mul,) = self.consumers[self.nodes[cast].output[0]]
        scaled = [t for t in self.nodes[mul].input
                  if t in self.producer and self.producer[t] != cast]  # fmt: skip
        if len(scaled) != 1:
            raise SliceError("an int8 product's output scale is not where it was expected")
        scales = self.producer[scaled[0]]
        index = [k for k, t in enumerate(self.nodes[scales].input) if t in self.inits]
        if len(index) != 1:
            raise SliceError("an int8 product's weight scales are not an initializer")
        return scales, index[0]

    def cut(self, arch: Arch, kept: Sequence[int]):
        """The sub-BERT whose layer i is the max graph's layer ``kept[i]``, with arch's
        heads and FFN width per layer (an ``onnx.ModelProto``)."""
        import onnx

        if len(kept) != arch.depth or not all(0 <= k < len(self.layers) for k in kept):
            raise SliceError(f"layers {list(kept)} do not fit a depth-{arch.depth} sub-BERT")
        cuts = _Cuts(self.inits)
        keep: dict[int, onnx.NodeProto] = {}
        stream = self.layers[0].input
        for layer, spec in zip((self.layers[k] for k in kept), arch.layers, strict=True):
            for i in layer.nodes:
                node = onnx.NodeProto()
                node.CopyFrom(self.nodes[i])
                for j, name in enumerate(node.input):
                    if name == layer.input:
                        node.input[j] = stream
                keep[i] = node
            self._narrow(layer, spec, keep, cuts)
            stream = layer.output
        last = self.layers[-1].output
        inner = {i for layer in self.layers for i in layer.nodes}
        nodes = []
        for i, original in enumerate(self.nodes):
            if i in inner:
                if i in keep:
                    nodes.append(keep[i])
                continue
            node = onnx.NodeProto()
            node.CopyFrom(original)
            for j, name in enumerate(node.input):
                if name == last:
                    node.input[j] = stream
            nodes.append(node)
        used = {name for node in nodes for name in node.input}
        graph = onnx.helper.make_graph(
            nodes, self.model.graph.name, list(self.model.graph.input),
            list(self.model.graph.output),
            [t for t in self.model.graph.initializer if t.name in used] + cuts.made,
        )  # fmt: skip
        model = onnx.helper.make_model(graph, opset_imports=list(self.model.opset_import))
        model.ir_version = self.model.ir_version
        return model

    def _narrow(self, layer: _Layer, spec, keep: dict, cuts: _Cuts) -> None:
        width = spec.heads * self.head_dim
        full = self.heads * self.head_dim
        qkv = np.concatenate([np.arange(width) + k * full for k in range(3)])
        attention = keep[layer.attention]
        # Attention / QAttention: input, weights, bias, [input scale, weight scales, mask,
        # input zero point, weight zero points]; per-channel vectors follow the columns
        for j in (1, 2, 4, 7):
            if j < len(attention.input) and attention.input[j]:
                cuts.columns(attention, j, qkv, 3 * full)
        for attr in attention.attribute:
            if attr.name == "num_heads":
                attr.i = spec.heads
            elif attr.name == "qkv_hidden_sizes":
                del attr.ints[:]
                attr.ints.extend([width] * 3)
        cuts.rows(keep[layer.out_proj], 1, width)
        ffn = np.arange(spec.ffn)
        ffn_in = keep[layer.ffn_in]
        cuts.columns(ffn_in, 1, ffn, None)
        if len(ffn_in.input) > 3 and ffn_in.input[3]:  # int8: the weights' zero points
            cuts.columns(ffn_in, 3, ffn, None)
        for where in (layer.ffn_bias, layer.ffn_scale):
            if where is not None:
                cuts.columns(keep[where[0]], where[1], ffn, None)
        cuts.rows(keep[layer.ffn_out], 1, spec.ffn)


class _Cuts:
    """Cut copies of initializers; an initializer shared by several nodes (the exporter
    merges equal tensors) is never changed in place."""

    def __init__(self, inits: dict):
        self.inits = inits
        self.made: list = []
        self._names: dict[tuple, str] = {}

    def columns(self, node, j: int, index: np.ndarray, expect: int | None) -> None:
        tensor = self.inits.get(node.input[j])
        if tensor is None or not tensor.dims:
            return  # a computed input or a per-tensor scalar: nothing to cut
        if expect is not None and tensor.dims[-1] != expect:
            raise SliceError(f"{tensor.name} has {tensor.dims[-1]} columns, not {expect}")
        node.input[j] = self._cut(tensor, "c", index, lambda a: a[..., index])

    def rows(self, node, j: int, count: int) -> None:
        tensor = self.inits.get(node.input[j])
        if tensor is None or len(tensor.dims) != 2:
            raise SliceError(f"{node.name}: its weights are not a matrix initializer")
        node.input[j] = self._cut(tensor, "r", np.arange(count), lambda a: a[:count])

    def _cut(self, tensor, how: str, index: np.ndarray, take) -> str:
        from onnx import numpy_helper

        key = (tensor.name, how, len(index), int(index[-1]))
        if key not in self._names:
            name = f"{tensor.name}.cut{len(self._names)}"
            array = np.ascontiguousarray(take(numpy_helper.to_array(tensor)))
            self.made.append(numpy_helper.from_array(array, name))
            self._names[key] = name
        return self._names[key]


def signature(model) -> list[tuple]:
    """What latency depends on, node by node: operator, attributes and the shapes of the
    initializers it reads (names left out: the exporter names and merges tensors its own
    way). Two graphs with one signature run the same kernels on the same shapes."""
    import onnx

    inits = {t.name: tuple(t.dims) for t in model.graph.initializer}
    rows = []
    for node in model.graph.node:
        attrs = tuple(
            sorted((a.name, repr(onnx.helper.get_attribute_value(a))) for a in node.attribute)
        )
        shapes = tuple(inits.get(name, "x" if name else "") for name in node.input)
        rows.append((node.domain, node.op_type, attrs, shapes))
    return rows
