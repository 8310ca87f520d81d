"""Seeds that are pure functions of their parts, so that every random stream of a run (data order, crops, noise,
validation samples) is the same in a fresh run and in a resumed one, whatever ran before."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed that is a pure function of ``parts`` (ints/strings), for independent reproducible streams."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def pair_seed(seed: int, epoch: int, index: int, *extra: int) -> int:
    """A well-mixed 63-bit seed for one example from ``(seed, epoch, index, *extra)`` (all non-negative ints)."""
    state = np.random.SeedSequence([int(seed), int(epoch), int(index), *map(int, extra)]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & ((1 << 63) - 1)
