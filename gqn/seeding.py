"""Seeds: the one way a stream of randomness is split off a run's seed.

Every random choice draws from a generator derived from one seed (docs/design.md). A
stream is named by a path of keys after the seed: integers (a split's index, a scene's index,
a process's rank) or short names (``"batches"``, ``"evaluation"``). numpy's ``SeedSequence``
mixes the seed and the path, so different paths give independent streams and the same path
always gives the same stream::

    rng = derive_rng(seed, "batches", rank)           # numpy Generator
    torch.manual_seed(derive_seed(seed, "latents", rank))
"""

from __future__ import annotations

import hashlib

import numpy as np

from gqn.checks import check_int

Key = int | str


def _entropy(seed: int, keys: tuple[Key, ...]) -> list[int]:
    """``[seed, *keys]`` as non-negative integers (a name becomes 64 bits of its SHA-256)."""
    words = []
    for what, value in (("seed", seed), *(("key", key) for key in keys)):
        if isinstance(value, str) and what == "key":
            value = int.from_bytes(hashlib.sha256(value.encode()).digest()[:8], "little")
        words.append(check_int(value, what))
    return words


def derive_rng(seed: int, *keys: Key) -> np.random.Generator:
    """The numpy generator of the stream ``keys`` of ``seed``; integer-only paths give
    ``np.random.default_rng([seed, *keys])``."""
    return np.random.default_rng(_entropy(seed, keys))


def derive_seed(seed: int, *keys: Key) -> int:
    """A 32-bit integer seed of the stream ``keys`` of ``seed``, for APIs that take an int
    (``torch.manual_seed``, ``env.reset(seed=...)``)."""
    return int(np.random.SeedSequence(_entropy(seed, keys)).generate_state(1)[0])
