"""Which sub-BERTs to profile: the min, the max, then a space-filling design.

Uniform sampling piles mean layer widths up in the middle (an average of independent
per-layer draws); a predictor then knows little about small and large models. Here each
sample gets a target depth, a target mean head position and a target mean FFN position
from a Latin hypercube, and per-layer choices are drawn around those targets, so the
design covers the whole range of sizes while layers stay heterogeneous.
"""

from __future__ import annotations

import numpy as np

from yoco_deploy.arch import Arch, LayerSpec
from yoco_deploy.space import SearchSpace


class SpaceFillingDesign:
    """Seeded generator of profiling designs; owns its RNG."""

    def __init__(self, space: SearchSpace, seed: int = 0, spread: float = 0.35):
        self.space = space
        self.rng = np.random.default_rng(seed)
        self.spread = spread

    def _latin_hypercube(self, n: int, dims: int) -> np.ndarray:
        cols = [(self.rng.permutation(n) + self.rng.random(n)) / n for _ in range(dims)]
        return np.stack(cols, axis=1)

    def _pick(self, choices: tuple[int, ...], target: float, count: int) -> list[int]:
        u = np.clip(target + self.rng.uniform(-self.spread, self.spread, count), 0, 1)
        return [choices[round(x * (len(choices) - 1))] for x in u]

    def _arch(self, point: np.ndarray) -> Arch:
        s = self.space
        depth = s.depth_choices[min(int(point[0] * len(s.depth_choices)), len(s.depth_choices) - 1)]
        heads = self._pick(s.head_choices, point[1], depth)
        ffn = self._pick(s.ffn_choices, point[2], depth)
        return Arch(tuple(LayerSpec(h, f) for h, f in zip(heads, ffn, strict=True)))

    def sample(self, n: int, exclude: set[str] | None = None) -> list[Arch]:
        """``n`` distinct archs (min and max first), none of whose ids are in ``exclude``."""
        seen = set(exclude or ())
        out: list[Arch] = []
        for arch in (self.space.min_arch(), self.space.max_arch()):
            if len(out) < n and arch.arch_id not in seen:
                out.append(arch)
                seen.add(arch.arch_id)
        attempts = 0
        while len(out) < n:
            attempts += 1
            if attempts > 50:
                raise ValueError(f"could not find {n} distinct architectures in the space")
            for point in self._latin_hypercube(n - len(out), 3):
                arch = self._arch(point)
                if arch.arch_id not in seen:
                    out.append(arch)
                    seen.add(arch.arch_id)
        return out[:n]
