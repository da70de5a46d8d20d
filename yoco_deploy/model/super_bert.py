"""The elastic super-BERT: one set of shared weights, any sub-BERT of the space active.

A sub-BERT uses the first L layers, in each the first h heads (rows of Q/K/V, columns of
the attention output) and the first f FFN neurons (rows of the first FFN linear, columns
of the second). Forward slices the shared parameters, so gradients reach them directly.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn
from transformers.activations import ACT2FN

from yoco_deploy.arch import Arch
from yoco_deploy.model.modeling_yoco_bert import (
    additive_mask,
    classify_head,
    embed,
    feed_forward,
    self_attention,
)
from yoco_deploy.model.readout import POOLING_KEY, POOLINGS, SELECTION_KEY, resolve_readout
from yoco_deploy.space import ArchSampler, ModelDims, SearchSpace


def _pair(module: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    return module.weight, module.bias


class SuperBert(nn.Module):
    """Wraps a ``BertForSequenceClassification`` whose weights every sub-BERT shares."""

    def __init__(self, model: nn.Module, space: SearchSpace | None = None, pooling: str = "cls"):
        super().__init__()
        self.model = model
        self.dims = ModelDims.from_config(model.config)
        self.space = space or SearchSpace.default_for(self.dims)
        if self.space.dims != self.dims:
            raise ValueError("search space was derived from another model's dimensions")
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose from {POOLINGS}")
        self.pooling = pooling
        # recorded in the checkpoint's config.json, so a saved super-BERT keeps its meaning
        setattr(model.config, POOLING_KEY, pooling)
        setattr(model.config, SELECTION_KEY, self.space.layer_selection)
        self.act = ACT2FN[model.config.hidden_act]
        self._active = self.space.max_arch()

    @classmethod
    def from_pretrained(
        cls,
        ref: str,
        num_labels: int | None = None,
        space_overrides: dict | None = None,
        pooling: str | None = None,
        layer_selection: str | None = None,
        label_names: tuple[str, ...] | None = None,
    ) -> SuperBert:
        """Pooling and layer selection: as given, else as the checkpoint records them,
        else as a sentence-transformers folder declares (``readout.resolve_readout``).
        ``label_names``: the task's classes, recorded as the config's id2label."""
        from yoco_deploy.errors import ModelLoadError
        from yoco_deploy.model.loading import load_bert_classifier, resolve

        model = load_bert_classifier(ref, num_labels, label_names)
        try:
            pooling, selection = resolve_readout(
                model.config, resolve(ref), pooling, layer_selection
            )
        except ValueError as err:
            raise ModelLoadError(f"model {ref!r}: {err}") from None
        overrides = {**(space_overrides or {})}
        overrides.setdefault("layers", selection)
        space = SearchSpace.from_config(model.config, overrides)
        return cls(model, space, pooling)

    @property
    def config(self):
        return self.model.config

    # ---- the active sub-BERT --------------------------------------------------------

    @property
    def active(self) -> Arch:
        return self._active

    def set_active(self, arch: Arch) -> None:
        self._active = self.space.validate(arch)

    def set_max(self) -> Arch:
        self.set_active(self.space.max_arch())
        return self._active

    def set_min(self) -> Arch:
        self.set_active(self.space.min_arch())
        return self._active

    def set_random(self, sampler: ArchSampler) -> Arch:
        self.set_active(sampler.sample())
        return self._active

    # ---- forward ------------------------------------------------------------------

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_hidden: bool = False,
    ):
        """Logits of the active sub-BERT; with ``output_hidden``, (logits, hidden states)."""
        logits, hidden = self.forward_with_hidden(input_ids, attention_mask, token_type_ids)
        return (logits, hidden) if output_hidden else logits

    def forward_with_hidden(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits of the active sub-BERT and its hidden states (embeddings, then each layer)."""
        c, bert, train = self.config, self.model.bert, self.training
        eps, drop = c.layer_norm_eps, c.hidden_dropout_prob
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        e = bert.embeddings
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).unsqueeze(0)
        x = embed(
            input_ids,
            token_type_ids,
            positions,
            e.word_embeddings.weight,
            e.position_embeddings.weight,
            e.token_type_embeddings.weight,
            *_pair(e.LayerNorm),
            eps,
            drop,
            train,
        )
        mask = additive_mask(attention_mask, x.dtype)
        hidden = [x]
        kept = self.space.kept_layers(self._active.depth)
        for spec, index in zip(self._active.layers, kept, strict=True):
            layer = bert.encoder.layer[index]
            inner, f = spec.heads * self.dims.head_dim, spec.ffn
            att = layer.attention
            q, k, v = att.self.query, att.self.key, att.self.value
            qkv = (
                q.weight[:inner],
                q.bias[:inner],
                k.weight[:inner],
                k.bias[:inner],
                v.weight[:inner],
                v.bias[:inner],
            )
            out = (att.output.dense.weight[:, :inner], att.output.dense.bias)
            x = self_attention(
                x,
                mask,
                spec.heads,
                self.dims.head_dim,
                qkv,
                out,
                _pair(att.output.LayerNorm),
                eps,
                c.attention_probs_dropout_prob,
                drop,
                train,
            )
            inter = layer.intermediate.dense
            x = feed_forward(
                x,
                (inter.weight[:f], inter.bias[:f]),
                (layer.output.dense.weight[:, :f], layer.output.dense.bias),
                _pair(layer.output.LayerNorm),
                self.act,
                eps,
                drop,
                train,
            )
            hidden.append(x)
        cls_drop = c.classifier_dropout if c.classifier_dropout is not None else drop
        logits = classify_head(
            x,
            attention_mask,
            self.pooling,
            _pair(bert.pooler.dense),
            _pair(self.model.classifier),
            cls_drop,
            train,
        )
        return logits, hidden

    # ---- importance reordering (DynaBERT) -----------------------------------------------

    @torch.no_grad()
    def reorder_by_importance(
        self, batches: Iterable[Mapping[str, torch.Tensor]] | None = None
    ) -> dict[str, list[list[int]]]:
        """Permute heads and FFN neurons of every layer, most important first.

        With ``batches`` (dicts of input_ids, attention_mask, token_type_ids and optional
        labels), importance is the first-order Taylor estimate of the loss change when a
        head or neuron is masked (DynaBERT); without, the L2 norm of its output weights.
        The full model computes the same function afterwards. Returns the permutations.
        """
        scores = self._taylor_scores(batches) if batches is not None else self._norm_scores()
        d = self.dims.head_dim
        orders: dict[str, list[list[int]]] = {"heads": [], "ffn": []}
        for layer, (head_score, ffn_score) in zip(
            self.model.bert.encoder.layer, scores, strict=True
        ):
            head_order = torch.argsort(head_score, descending=True, stable=True)
            rows = (head_order[:, None] * d + torch.arange(d)).reshape(-1)
            att = layer.attention
            for lin in (att.self.query, att.self.key, att.self.value):
                lin.weight.copy_(lin.weight[rows])
                lin.bias.copy_(lin.bias[rows])
            att.output.dense.weight.copy_(att.output.dense.weight[:, rows])
            ffn_order = torch.argsort(ffn_score, descending=True, stable=True)
            inter, outer = layer.intermediate.dense, layer.output.dense
            inter.weight.copy_(inter.weight[ffn_order])
            inter.bias.copy_(inter.bias[ffn_order])
            outer.weight.copy_(outer.weight[:, ffn_order])
            orders["heads"].append(head_order.tolist())
            orders["ffn"].append(ffn_order.tolist())
        return orders

    def _norm_scores(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        n, d = self.dims.num_heads, self.dims.head_dim
        scores = []
        for layer in self.model.bert.encoder.layer:
            w_o = layer.attention.output.dense.weight  # (hidden, heads * d)
            head = w_o.reshape(w_o.shape[0], n, d).pow(2).sum(dim=(0, 2)).sqrt()
            ffn = layer.output.dense.weight.pow(2).sum(dim=0).sqrt()
            scores.append((head, ffn))
        return scores

    def _taylor_scores(
        self, batches: Iterable[Mapping[str, torch.Tensor]]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        # The gradient of the loss w.r.t. a head's (or neuron's) mask equals
        # sum(W * dL/dW) over that unit's columns of the following projection.
        n, d = self.dims.num_heads, self.dims.head_dim
        layers = self.model.bert.encoder.layer
        totals = [(torch.zeros(n), torch.zeros(w.output.dense.weight.shape[1])) for w in layers]
        was_training, previous = self.training, self._active
        self.eval()
        full = Arch.uniform(self.dims.num_layers, n, self.dims.intermediate)
        self._active = full  # importance is measured on the full model
        try:
            for batch in batches:
                with torch.enable_grad():
                    self.zero_grad(set_to_none=True)
                    logits = self(
                        batch["input_ids"], batch.get("attention_mask"), batch.get("token_type_ids")
                    )
                    labels = batch.get("labels")
                    if labels is None:
                        labels = logits.argmax(-1)
                    if logits.shape[-1] == 1:
                        loss = torch.nn.functional.mse_loss(logits.squeeze(-1), labels.float())
                    else:
                        loss = torch.nn.functional.cross_entropy(logits, labels)
                    loss.backward()
                for (head, ffn), layer in zip(totals, layers, strict=True):
                    w_o = layer.attention.output.dense.weight
                    prod = (w_o * w_o.grad).reshape(w_o.shape[0], n, d).sum(dim=(0, 2))
                    head += prod.abs()
                    w_f = layer.output.dense.weight
                    ffn += (w_f * w_f.grad).sum(dim=0).abs()
        finally:
            self.zero_grad(set_to_none=True)
            self._active = previous
            self.train(was_training)
        return totals
