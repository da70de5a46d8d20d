import itertools
import json

import numpy as np
import pytest

from yoco_deploy.arch import Arch, LayerSpec
from yoco_deploy.deploy.budgets import BudgetError, CostModel, Target, parse_target
from yoco_deploy.deploy.search import Search, SearchError, SearchSettings

from helpers import SPACE, Additive, max_body


def all_archs():
    for depth in SPACE.depth_choices:
        for cells in itertools.product(SPACE.cells, repeat=depth):
            yield Arch(tuple(LayerSpec(*c) for c in cells))


def exact_optimum(objective, cost):
    """Brute force over the whole space (22,464 sub-BERTs): the knapsack's true optimum."""
    best = max(
        (a for a in all_archs() if cost.feasible(a)), key=lambda a: objective.evaluate(a, "search")
    )
    return best, objective.evaluate(best, "search")


@pytest.fixture(scope="module")
def knapsack():
    cost = CostModel(Target("t", {"params_non_embedding": 0.55 * max_body()}), SPACE)
    objective = Additive(seed=1)
    return cost, objective, exact_optimum(objective, cost)


def test_esng_finds_the_constrained_optimum(knapsack):
    cost, _, (best, value) = knapsack
    found = 0
    for seed in range(5):
        settings = SearchSettings(
            algo="esng", evaluations=600, seed=seed, lam=8, delta=0.5, rescore_top=1
        )
        result = Search(SPACE, cost, Additive(seed=1), settings).run()
        assert cost.feasible(result.best.arch)
        found += result.best.arch == best
        assert result.best.fitness >= 0.97 * value
    assert found >= 3, f"ESNG found the exact optimum in {found}/5 seeds"


@pytest.mark.parametrize("algo", ["random", "evolution", "esng"])
def test_every_algorithm_respects_budgets_and_logs(algo, knapsack, tmp_path):
    cost, _, (_, value) = knapsack
    log = tmp_path / "s.jsonl"
    settings = SearchSettings(algo=algo, evaluations=60, seed=0)
    result = Search(SPACE, cost, Additive(seed=1), settings, log).run()
    assert result.evaluations == 60 and len(result.history) == 60
    assert all(cost.feasible(c.arch) for c in result.ranked)
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    evals = [r for r in rows if r["kind"] == "eval"]
    assert len(evals) == 60 and [r["n"] for r in evals] == list(range(1, 61))
    assert all(r["best_so_far"] >= q["best_so_far"] for q, r in itertools.pairwise(evals))
    assert rows[0]["kind"] == "inputs"  # what the scores were produced with
    assert {r["kind"] for r in rows[1:]} == {"eval", "rescore"}
    assert result.best.fitness <= value + 1e-9


def test_infeasible_candidates_are_not_evaluated_by_default(knapsack):
    cost, _, _ = knapsack
    objective = Additive(seed=1)
    result = Search(SPACE, cost, objective, SearchSettings(evaluations=40, seed=0)).run()
    assert objective.calls == 40 + min(5, len(result.ranked))  # search + re-scoring only
    penal = Additive(seed=1)
    Search(SPACE, cost, penal, SearchSettings(evaluations=40, seed=0, infeasible="penalize")).run()


def test_impossible_budget_names_the_smallest_cost():
    cost = CostModel(Target("t", {"params": 1000}), SPACE)
    with pytest.raises(BudgetError, match=r"below the smallest achievable .*the min sub-BERT"):
        Search(SPACE, cost, Additive(), SearchSettings()).run()


def test_resumed_search_equals_uninterrupted(knapsack, tmp_path):
    cost, _, _ = knapsack

    class Crash(Additive):
        def evaluate(self, arch, split):
            if self.calls == 23:
                raise KeyboardInterrupt
            return super().evaluate(arch, split)

    for algo in ("esng", "evolution"):
        settings = SearchSettings(algo=algo, evaluations=50, seed=3)
        straight = Search(SPACE, cost, Additive(1), settings, tmp_path / f"a-{algo}.jsonl").run()
        log = tmp_path / f"b-{algo}.jsonl"
        with pytest.raises(KeyboardInterrupt):
            Search(SPACE, cost, Crash(1), settings, log).run()
        resumed_objective = Additive(1)
        resumed = Search(SPACE, cost, resumed_objective, settings, log).run()
        assert resumed_objective.calls < straight.evaluations  # the log served the first 23
        assert [c.arch for c in resumed.ranked] == [c.arch for c in straight.ranked]
        assert resumed.history == straight.history


@pytest.mark.parametrize(
    "text, budgets",
    [
        ("cpu:latency=20ms", {"latency": 20.0}),
        (
            "edge:latency=0.5s,params=30M,flops=2G,size=60MB",
            {"latency": 500.0, "params": 30e6, "flops": 2e9, "size": 60.0},
        ),
    ],
)
def test_parse_target(text, budgets):
    assert parse_target(text) == Target(text.split(":")[0], budgets)


@pytest.mark.parametrize("text", ["cpu", "cpu:latency=20xs", "cpu:speed=1ms", "cpu:latency=-1ms"])
def test_bad_targets(text):
    with pytest.raises(BudgetError):
        parse_target(text)


def test_unknown_algo():
    with pytest.raises(SearchError, match="unknown --algo"):
        SearchSettings(algo="bayes")


class Batched(Additive):
    """Additive with a batch API, recording each batch it is handed."""

    def __init__(self, seed=0):
        super().__init__(seed)
        self.batches = []

    def evaluate_many(self, archs, split):
        self.batches.append((len(archs), split))
        return [self.evaluate(a, split) for a in archs]


@pytest.mark.parametrize("algo", ["esng", "random", "evolution"])
def test_batched_evaluation_follows_the_same_trajectory(algo, knapsack):
    cost, _, _ = knapsack
    settings = SearchSettings(algo=algo, evaluations=50, seed=2)
    plain, batched = Additive(1), Batched(1)
    a = Search(SPACE, cost, plain, settings).run()
    b = Search(SPACE, cost, batched, settings).run()
    assert [c.arch for c in b.ranked] == [c.arch for c in a.ranked] and b.history == a.history
    assert batched.calls == plain.calls  # no candidate scored twice or beyond the budget
    assert max(n for n, split in batched.batches if split == "search") > 1
    assert ("rescore" in {split for _, split in batched.batches}) is True


PARALLEL_SCRIPT = """
import json, sys
sys.path.insert(0, {tests!r})
from accelerate import Accelerator
from helpers import SPACE, Additive, max_body
from yoco_deploy.deploy.budgets import CostModel, Target
from yoco_deploy.deploy.supernet import ParallelEvaluator
from yoco_deploy.deploy.search import Search, SearchSettings

acc = Accelerator(cpu=True)
cost = CostModel(Target("t", {{"params_non_embedding": 0.55 * max_body()}}), SPACE)
inner = Additive(seed=1)
result = Search(SPACE, cost, ParallelEvaluator(inner, acc), SearchSettings(evaluations=40)).run()
out = {{"calls": inner.calls, "ranked": [c.arch.arch_id for c in result.ranked],
       "history": result.history}}
open({out!r} + f"/rank{{acc.process_index}}.json", "w").write(json.dumps(out))
acc.wait_for_everyone()
acc.end_training()
"""


@pytest.mark.slow  # two processes and a rendezvous: the slow suite
def test_parallel_search_splits_candidates_between_processes(knapsack, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    cost, _, _ = knapsack
    single_obj = Additive(1)
    single = Search(SPACE, cost, single_obj, SearchSettings(evaluations=40)).run()
    script = tmp_path / "parallel.py"
    tests = str(Path(__file__).parent)
    script.write_text(PARALLEL_SCRIPT.format(tests=tests, out=str(tmp_path)))
    # torchrun is what `accelerate launch --multi_gpu` starts; on CPU it runs gloo.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    cmd += ["2", str(script)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(tests).parent)}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for rank in ranks:  # both processes follow the single-process trajectory
        assert rank["ranked"] == [c.arch.arch_id for c in single.ranked]
        assert rank["history"] == single.history
    assert ranks[0]["calls"] + ranks[1]["calls"] == single_obj.calls
    assert 0 < ranks[0]["calls"] < single_obj.calls


@pytest.mark.parametrize("algo", ["esng", "evolution"])
def test_resumed_batched_search_scores_nothing_twice(algo, knapsack, tmp_path):
    cost, _, _ = knapsack

    class Crash(Batched):
        def evaluate(self, arch, split):
            if self.calls == 23:
                raise KeyboardInterrupt
            return super().evaluate(arch, split)

    settings = SearchSettings(algo=algo, evaluations=50, seed=3)
    straight_objective = Batched(1)
    straight = Search(SPACE, cost, straight_objective, settings).run()
    log = tmp_path / "s.jsonl"
    with pytest.raises(KeyboardInterrupt):
        Search(SPACE, cost, Crash(1), settings, log).run()
    logged = len(log.read_text().splitlines()) - 1  # the first row records the inputs
    resumed_objective = Batched(1)
    resumed = Search(SPACE, cost, resumed_objective, settings, log).run()
    assert resumed.history == straight.history
    assert resumed_objective.calls == straight_objective.calls - logged


def test_latency_budget_refuses_a_predictor_timed_in_another_format():
    from types import SimpleNamespace

    predictor = SimpleNamespace(reference={"format": "int8"}, space=SPACE.shape_dict())
    target = Target("gpu", {"latency": 5.0})
    with pytest.raises(BudgetError, match="profiled with int8 files, but the target ships fp16"):
        CostModel(target, SPACE, predictor, fmt="fp16")
    assert CostModel(target, SPACE, predictor, fmt="int8").fmt == "int8"
    edge = Target("edge", {"size": 1.0})
    half = CostModel(edge, SPACE, fmt="fp16").costs(SPACE.max_arch())["size"]
    full = CostModel(edge, SPACE, fmt="fp32").costs(SPACE.max_arch())["size"]
    assert half == pytest.approx(0.5 * full)


class Plateau:
    """The failure the search benchmark showed, in miniature: the shallowest sub-BERTs
    all tie at the majority-class score; deeper ones score by their width (returns the
    metric and a loss, as the real evaluator does)."""

    def __init__(self):
        self.calls = 0

    def evaluate(self, arch, split):
        from yoco_deploy.train.evaluation import Evaluation

        self.calls += 1
        if arch.depth == min(SPACE.depth_choices):
            return Evaluation("accuracy", 0.5, 0.69 + 1e-3 * sum(arch.ffn) / 96, 100)
        width = sum(h * f for h, f in zip(arch.heads, arch.ffn, strict=True))
        value = 0.6 + 0.3 * width / (arch.depth * 6 * 96)
        return Evaluation("accuracy", value, 1 - value, 100)


def _tight_budget():
    # at 42% of the max sub-BERT's non-embedding parameters nearly every feasible uniform
    # sample is of the shallowest depth, and depth 3 fits only when narrow
    return CostModel(Target("t", {"params_non_embedding": 0.42 * max_body()}), SPACE)


def test_the_plateau_scenario_is_hard_for_uniform_sampling():
    cost = _tight_budget()
    feasible = [a for a in SPACE.sampler(0).sample_many(3000) if cost.feasible(a)]
    shallow = sum(a.depth == min(SPACE.depth_choices) for a in feasible)
    assert shallow / len(feasible) > 0.85


@pytest.mark.parametrize("algo, cold", [("esng", False), ("esng", True), ("evolution", False)])
def test_search_does_not_collapse_onto_a_plateau(algo, cold):
    """With repair, tempering and loss tie-breaks, no seed ends among the tied shallow
    sub-BERTs at a tight budget."""
    cost = _tight_budget()
    stuck = 0
    warm = None
    if not cold:  # theta learnt in training points at the full model, which breaks the budget
        warm = [np.eye(k)[-1] * 0.9 + 0.1 / k for k in SPACE.cardinalities]
    for seed in range(10):
        settings = SearchSettings(algo=algo, evaluations=30, seed=seed, warm_theta=warm)
        result = Search(SPACE, cost, Plateau(), settings).run()
        stuck += result.best.fitness <= 0.5
    assert stuck == 0


def test_repair_lands_inside_the_budget_and_spends_no_evaluation():
    from yoco_deploy.deploy.repair import repair

    cost = _tight_budget()
    for arch in SPACE.sampler(5).sample_many(300):
        fixed = repair(arch, SPACE, cost.feasible)
        assert cost.feasible(fixed) and SPACE.contains(fixed)
        if cost.feasible(arch):
            assert fixed == arch
        else:  # at the boundary: never larger than the sample, in no dimension
            assert fixed.depth <= arch.depth
            assert all(
                f.ffn <= a.ffn and f.heads <= a.heads
                for f, a in zip(fixed.layers, arch.layers, strict=False)
            )
    evaluator = Plateau()
    settings = SearchSettings(algo="esng", evaluations=25, seed=0, rescore_top=1)
    result = Search(SPACE, cost, evaluator, settings).run()
    assert evaluator.calls == 25 + 1  # every evaluation is a distinct feasible sub-BERT
    assert all(cost.feasible(c.arch) for c in result.ranked)


def test_ties_are_broken_by_the_loss():
    from yoco_deploy.deploy.search import Scored
    from yoco_deploy.train.evaluation import Evaluation

    a = Scored(SPACE.min_arch(), 0.5, {}, loss=0.7)
    b = Scored(SPACE.max_arch(), 0.5, {}, loss=0.6)
    c = Scored(SPACE.max_arch(), 0.4, {}, loss=0.1)
    assert sorted([a, c, b], key=Scored.rank_key) == [b, a, c]

    class Tied:
        def evaluate(self, arch, split):
            return Evaluation("accuracy", 0.5, 1.0 / sum(arch.ffn), 10)

    cost = CostModel(Target("t", {"params": 1e12}), SPACE)
    settings = SearchSettings(algo="random", evaluations=20, seed=0, rescore_top=3)
    result = Search(SPACE, cost, Tied(), settings).run()
    ffn = [sum(c.arch.ffn) for c in result.ranked]
    assert ffn[:3] == sorted(ffn[:3], reverse=True) and ffn[0] == max(ffn)


def test_stagnant_theta_is_tempered():
    cost = _tight_budget()
    settings = SearchSettings(algo="esng", evaluations=60, seed=0, stagnation=3)
    assert Search(SPACE, cost, Plateau(), settings).run().tempered > 0


def test_penalty_follows_yoco():
    cost = CostModel(Target("t", {"params_non_embedding": 0.5 * max_body()}), SPACE)
    assert cost.penalty(SPACE.min_arch()) == 1.0
    assert cost.penalty(SPACE.max_arch()) == 0.0  # cost_max: nothing left of the reward
    arch = next(a for a in SPACE.sampler(1).sample_many(500) if not cost.feasible(a))
    body, budget = cost.costs(arch)["params_non_embedding"], 0.5 * max_body()
    expected = (1 - (body - budget) / (max_body() - budget)) ** 2
    assert cost.penalty(arch) == pytest.approx(expected)


def test_without_the_defences_warm_esng_collapses_on_the_plateau():
    """The scenario above is the real failure: ESNG without repair, tempering and loss
    tie-breaks ends among the tied shallow sub-BERTs in some seeds."""
    cost = _tight_budget()
    warm = [np.eye(k)[-1] * 0.9 + 0.1 / k for k in SPACE.cardinalities]

    class MetricOnly(Plateau):
        def evaluate(self, arch, split):
            return super().evaluate(arch, split).value

    stuck = 0
    for seed in range(10):
        settings = SearchSettings(
            evaluations=30, seed=seed, warm_theta=warm, repair=False, stagnation=0
        )
        stuck += Search(SPACE, cost, MetricOnly(), settings).run().best.fitness <= 0.5
    assert stuck >= 1


@pytest.mark.parametrize("algo", ["esng", "random", "evolution"])
def test_a_space_with_fewer_feasible_sub_berts_than_evaluations_ends_with_them(algo):
    """When the budgets leave fewer sub-BERTs than --evaluations, the search ends with
    the best it found and says so, instead of ending with nothing."""
    from yoco_deploy.costs import arch_costs

    small = arch_costs(SPACE.min_arch(), SPACE.dims).params_non_embedding
    cost = CostModel(Target("t", {"params_non_embedding": small * 1.5}), SPACE)
    few = [a for a in all_archs() if cost.feasible(a)]
    assert 1 < len(few) < 40
    settings = SearchSettings(algo=algo, evaluations=40, seed=0)
    result = Search(SPACE, cost, Additive(seed=1), settings).run()
    assert result.exhausted and result.evaluations <= len(few)
    assert result.best.arch in few


def test_an_edited_log_row_is_named_and_repair_keeps_every_intact_row(knapsack, tmp_path):
    cost, _, _ = knapsack
    log = tmp_path / "s.jsonl"
    settings = SearchSettings(algo="random", evaluations=10, seed=0)
    first = Search(SPACE, cost, Additive(1), settings, log).run()
    lines = log.read_text().splitlines()
    edited = json.loads(lines[3])
    edited["fitness"] = 99.0  # a hand edit that would change the winner
    lines[3] = json.dumps(edited)
    log.write_text("\n".join(lines) + "\n")
    with pytest.raises(SearchError, match=r"line 4 was edited after it was written"):
        Search(SPACE, cost, Additive(1), settings, log).run()
    assert Search.repair_log(log) == 1
    assert len(log.read_text().splitlines()) == len(lines) - 1
    assert (tmp_path / "s.jsonl.rejected").exists()
    again = Search(SPACE, cost, Additive(1), settings, log).run()
    assert again.best.arch == first.best.arch and again.best.fitness < 99


def test_an_edited_measurement_is_named(tmp_path):
    from yoco_deploy.runtime import MeasurementLog, RunnerError

    log = MeasurementLog(tmp_path / "m.jsonl")
    for i in range(3):
        log.append({"kind": "model", "key": f"k{i}", "median_ms": 1.0 + i})
    lines = (tmp_path / "m.jsonl").read_text().splitlines()
    lines[1] = lines[1].replace('"median_ms": 2.0', '"median_ms": 0.2')
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(RunnerError, match="line 2 was edited"):
        MeasurementLog(tmp_path / "m.jsonl")
    assert MeasurementLog.repair(tmp_path / "m.jsonl") == 1
    assert [r["key"] for r in MeasurementLog(tmp_path / "m.jsonl").rows] == ["k0", "k2"]
