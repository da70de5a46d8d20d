"""The categorical distribution over architectures and its stochastic natural gradient.

One categorical variable for depth, one (heads, FFN) cell per layer (METHOD.md). The
update follows ASNG-NAS with the fixes METHOD.md lists: the lambda candidates of one
update must be scored on the same batch (the caller's duty; ``update`` takes their
objective values together), cells of layers beyond a candidate's depth are masked out of
the gradient, and variables fixed by the current phase are left alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from yoco_deploy.arch import Arch
from yoco_deploy.space import INACTIVE, SearchSpace


@dataclass(frozen=True)
class SubSpace:
    """Allowed category indices per variable (a training phase's restriction)."""

    allowed: tuple[tuple[int, ...], ...]

    @classmethod
    def full(cls, space: SearchSpace) -> SubSpace:
        return cls(tuple(tuple(range(k)) for k in space.cardinalities))

    @classmethod
    def of(
        cls,
        space: SearchSpace,
        depth: Sequence[int] | None = None,
        heads: Sequence[int] | None = None,
        ffn: Sequence[int] | None = None,
    ) -> SubSpace:
        """Restrict by value lists (None = every choice)."""
        depth = set(depth or space.depth_choices)
        heads, ffn = set(heads or space.head_choices), set(ffn or space.ffn_choices)
        d = tuple(i for i, v in enumerate(space.depth_choices) if v in depth)
        c = tuple(i for i, (h, f) in enumerate(space.cells) if h in heads and f in ffn)
        if not d or not c:
            raise ValueError("a sub-space must allow at least one depth and one cell")
        return cls((d,) + (c,) * space.dims.num_layers)


@dataclass
class CategoricalSNG:
    """p_theta over the space's encoding; owns its RNG; updated by SNG."""

    space: SearchSpace
    delta: float = 1.0
    lam: int = 2
    seed: int = 0
    theta: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        if not self.theta:
            self.theta = [np.full(k, 1.0 / k) for k in self.space.cardinalities]
        dims = len(self.theta)
        self.theta_min = [1.0 / (dims * (k - 1)) if k > 1 else 1.0 for k in self.cardinalities]

    @property
    def cardinalities(self) -> tuple[int, ...]:
        return self.space.cardinalities

    # ---- sampling ---------------------------------------------------------------------

    def _restricted(self, var: int, sub: SubSpace) -> tuple[np.ndarray, np.ndarray]:
        idx = np.asarray(sub.allowed[var])
        p = self.theta[var][idx]
        return idx, p / p.sum()

    def sample_codes(self, sub: SubSpace | None = None, uniform: bool = False) -> np.ndarray:
        """Codes drawn from p_theta (or uniformly) inside ``sub``; cells beyond the
        sampled depth are set inactive."""
        sub = sub or SubSpace.full(self.space)
        codes = np.empty(len(self.theta), dtype=np.int64)
        for var in range(len(self.theta)):
            idx, p = self._restricted(var, sub)
            codes[var] = self.rng.choice(idx) if uniform else self.rng.choice(idx, p=p)
        depth = self.space.depth_choices[codes[0]]
        codes[1 + depth :] = INACTIVE
        return codes

    def sample(self, sub: SubSpace | None = None, uniform: bool = False) -> tuple[Arch, np.ndarray]:
        codes = self.sample_codes(sub, uniform)
        return self.space.decode(codes), codes

    def exploit_probability(self) -> float:
        """rho / rho_max: normalised entropy of p_theta (1 at the uniform start)."""
        rho = sum(-(t * np.log(np.maximum(t, 1e-300))).sum() for t in self.theta)
        rho_max = sum(math.log(k) for k in self.cardinalities)
        return float(rho / rho_max) if rho_max > 0 else 0.0

    def sample_exploit_explore(self, sub: SubSpace | None = None) -> tuple[Arch, np.ndarray, bool]:
        """YOCO: from p_theta with probability rho/rho_max, else uniformly. Returns
        whether it came from p_theta (only those may feed the natural gradient)."""
        exploit = bool(self.rng.random() < self.exploit_probability())
        arch, codes = self.sample(sub, uniform=not exploit)
        return arch, codes, exploit

    def mode(self) -> Arch:
        codes = np.array([int(np.argmax(t)) for t in self.theta])
        depth = self.space.depth_choices[codes[0]]
        codes[1 + depth :] = INACTIVE
        return self.space.decode(codes)

    # ---- the update ---------------------------------------------------------------------

    def update(
        self, codes: Sequence[np.ndarray], losses: Sequence[float], sub: SubSpace | None = None
    ) -> bool:
        """One SNG step from lambda candidates scored together (lower loss is better).
        Returns False when nothing could be updated (all ties, or no active variable)."""
        sub = sub or SubSpace.full(self.space)
        lam = len(codes)
        if lam < 2 or len(losses) != lam:
            raise ValueError("an SNG update needs at least two scored candidates")
        utility = ranking_utility(np.asarray(losses, dtype=float))
        if not utility.any():
            return False
        grads: list[np.ndarray | None] = []
        norm_sq = 0.0
        for var in range(len(self.theta)):
            idx, p = self._restricted(var, sub)
            if len(idx) < 2:
                grads.append(None)  # fixed by the phase: nothing to learn here
                continue
            g = np.zeros(len(idx))
            for c, u in zip(codes, utility, strict=True):
                if c[var] == INACTIVE or u == 0:
                    continue  # a layer beyond this candidate's depth carries no signal
                onehot = (idx == c[var]).astype(float)
                g += u * (onehot - p)
            g /= lam
            grads.append(g)
            norm_sq += float((g**2 / p).sum())
        if norm_sq <= 0:
            return False
        eps = self.delta / math.sqrt(norm_sq)
        for var, g in enumerate(grads):
            if g is None:
                continue
            idx, p = self._restricted(var, sub)
            mass = self.theta[var][idx].sum()
            new = np.clip(p + eps * g, 0, None)
            self.theta[var][idx] = mass * new / new.sum()
            self._clip(var)
        return True

    def temper(self, weight: float) -> None:
        """Mix theta towards uniform: ``(1 - weight) theta + weight uniform`` (a restart
        at weight 1), so a distribution stuck on a plateau samples widely again."""
        if not 0 < weight <= 1:
            raise ValueError("temper weight must be in (0, 1]")
        for var, t in enumerate(self.theta):
            self.theta[var] = (1 - weight) * t + weight / len(t)

    def _clip(self, var: int) -> None:
        t = np.maximum(self.theta[var], self.theta_min[var])
        self.theta[var] = t / t.sum()

    # ---- storage -------------------------------------------------------------------------

    def state_dict(self) -> dict:
        return {
            "theta": [t.tolist() for t in self.theta],
            "delta": self.delta,
            "lam": self.lam,
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict) -> None:
        theta = [np.array(t, dtype=float) for t in state["theta"]]  # a copy: never shared
        if [len(t) for t in theta] != list(self.cardinalities):
            raise ValueError("theta was saved for another search space")
        self.theta = theta
        self.delta, self.lam = state["delta"], state["lam"]
        if "rng" in state:
            self.rng.bit_generator.state = state["rng"]


def ranking_utility(losses: np.ndarray) -> np.ndarray:
    """+1/mu for the mu best, -1/mu for the mu worst, 0 between; ties share."""
    lam = len(losses)
    mu = math.ceil(0.25 * lam)
    ranks = np.argsort(np.argsort(losses, kind="stable"), kind="stable")
    base = np.where(ranks < mu, 1.0 / mu, np.where(ranks >= lam - mu, -1.0 / mu, 0.0))
    out = base.copy()
    for value in np.unique(losses):  # tied candidates share their utilities
        tied = losses == value
        out[tied] = base[tied].mean()
    return out
