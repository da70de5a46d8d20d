"""Cheap search experiments: the real ``Search`` against a surrogate of the super-BERT.

    .venv/bin/python bench/search_sim.py [--seeds 50] [--evaluations 100]

The cost model is the committed predictor (x86-2c-ort-cpu-minilm, calibrated by the
reference time the search benchmark recorded); the evaluator is a ridge regression fitted
on the search benchmark's cached evaluations (runs/bench-search/evaluations-500.jsonl:
metric and loss per sub-BERT on the search split), over one-hot depth and per-position
(heads, FFN) features, rounded to the split's resolution so that ties exist as they do
for real. Seconds per run: tune a search variant here over many seeds, then confirm it on
the real benchmark (bench/search.py). Prints, per budget and algorithm, the mean final
surrogate metric and the share of runs that end within 1 point of the majority class.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from _common import ROOT
from search import ALGOS, DEVICE, LATENCY_SEQ

WORK = ROOT / "runs" / "bench-search"


class Surrogate:
    """Metric and loss of a sub-BERT from a ridge fit on the cached evaluations."""

    def __init__(self, space, rows: list[dict], n_examples: int):
        from yoco_deploy.arch import Arch

        self.space, self.n = space, n_examples
        archs = [Arch.from_dict(r["arch"]) for r in rows]
        x = np.stack([self.features(a) for a in archs])
        y = np.array([[r["value"], r["loss"]] for r in rows])
        lam = 1.0
        self.w = np.linalg.solve(x.T @ x + lam * np.eye(x.shape[1]), x.T @ y)
        self.known = {a.arch_id: tuple(v) for a, v in zip(archs, y, strict=True)}

    def features(self, arch) -> np.ndarray:
        s = self.space
        depth = np.eye(len(s.depth_choices))[s.depth_choices.index(arch.depth)]
        cells = np.zeros((s.dims.num_layers, len(s.cells)))
        for i, layer in enumerate(arch.layers):
            cells[i, s.cells.index((layer.heads, layer.ffn))] = 1
        return np.concatenate([[1.0], depth, cells.ravel()])

    def evaluate(self, arch, split):
        from yoco_deploy.train.evaluation import Evaluation

        value, loss = self.known.get(arch.arch_id) or tuple(self.features(arch) @ self.w)
        value = round(float(np.clip(value, 0, 1)) * self.n) / self.n  # ties, as for real
        return Evaluation("accuracy", value, float(loss), self.n)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--supernet", default=str(ROOT / "runs/sst2-minilm-super/final"))
    parser.add_argument("--seeds", type=int, default=50)
    parser.add_argument("--evaluations", type=int, default=100)
    parser.add_argument("--examples", type=int, default=500)
    parser.add_argument("--set", nargs="*", default=[], help="SearchSettings overrides k=v")
    args = parser.parse_args(argv)

    from yoco_deploy.deploy.budgets import CostModel, Target, load_predictor
    from yoco_deploy.deploy.search import Search, SearchSettings
    from yoco_deploy.model.super_bert import SuperBert

    setup = json.loads((WORK / "setup.json").read_text())
    rows = []
    for line in (WORK / f"evaluations-{args.examples}.jsonl").read_text().splitlines():
        row = json.loads(line)
        if row["split"] == "search":
            rows.append({"arch": row["arch"], **row["evaluation"]})
    meta = json.loads((Path(args.supernet) / "yoco_supernet.json").read_text())
    space = SuperBert.from_pretrained(args.supernet, 2).space
    surrogate = Surrogate(space, rows, args.examples)
    majority = json.loads((ROOT / "bench/results/search.json").read_text())["majority_search"]
    predictor = load_predictor(DEVICE, ROOT / "predictors" / f"{DEVICE}.json", space)
    overrides = dict(_override(item, SearchSettings()) for item in args.set)
    print(f"surrogate fitted on {len(rows)} cached evaluations; settings {overrides}")
    for share_text, budget in setup["budgets"].items():
        share = float(share_text)
        cost = CostModel(Target(DEVICE, {"latency": budget}), space, predictor, LATENCY_SEQ, 1,
                         setup["reference_ms_today"])  # fmt: skip
        for name, (algo, cold) in ALGOS.items():
            finals, stuck = [], 0
            for seed in range(args.seeds):
                settings = SearchSettings(
                    algo=algo, evaluations=args.evaluations, seed=seed,
                    warm_theta=None if cold else meta["sng"]["theta"], **overrides,
                )  # fmt: skip
                best = Search(space, cost, surrogate, settings).run().best
                finals.append(best.fitness)
                stuck += best.fitness <= majority + 0.01
            print(f"{share:.0%} {name:10s} mean {np.mean(finals):.4f} stuck {stuck}/{args.seeds}")
    return 0


def _override(item: str, defaults) -> tuple[str, object]:
    key, _, text = item.partition("=")
    kind = type(getattr(defaults, key))
    return key, text.lower() in ("1", "true", "yes") if kind is bool else kind(text)


if __name__ == "__main__":
    sys.exit(main())
