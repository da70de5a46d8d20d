"""The evolutionary search's variation operators (HAT's mutation and crossover) on the
codes of a sub-BERT; the caller owns the random generator, so its draw order is theirs."""

from __future__ import annotations

import numpy as np

from yoco_deploy.arch import Arch
from yoco_deploy.space import INACTIVE, SearchSpace


def mutate(arch: Arch, space: SearchSpace, rng: np.random.Generator, prob: float) -> Arch:
    """Each of the depth and the layers' cells redrawn with probability ``prob``."""
    codes = space.encode(arch)
    if rng.random() < prob:
        codes[0] = rng.integers(len(space.depth_choices))
    depth = space.depth_choices[codes[0]]
    for i in range(1, 1 + depth):  # the layers a deeper draw adds need a cell too
        if codes[i] == INACTIVE or rng.random() < prob:
            codes[i] = rng.integers(len(space.cells))
    codes[1 + depth :] = INACTIVE
    return space.decode(codes)


def crossover(a: Arch, b: Arch, space: SearchSpace, rng: np.random.Generator) -> Arch:
    """Each code from either parent with even odds."""
    ca, cb = space.encode(a), space.encode(b)
    pick = rng.random(len(ca)) < 0.5
    child = np.where(pick, ca, cb)
    depth = space.depth_choices[child[0]]
    for i in range(1, 1 + depth):  # a layer one parent lacks comes from the other
        if child[i] == INACTIVE:
            child[i] = ca[i] if ca[i] != INACTIVE else cb[i]
        if child[i] == INACTIVE:
            child[i] = rng.integers(len(space.cells))
    child[1 + depth :] = INACTIVE
    return space.decode(child)
