"""Seed derivation: named streams are reproducible, independent, and integer paths keep the
dataset seeds numpy's ``default_rng([seed, ...])`` gave."""

import numpy as np
import pytest

from gqn.seeding import derive_rng, derive_seed


def test_same_path_same_stream_other_paths_other_streams() -> None:
    assert derive_rng(3, "batches", 0).random(4).tolist() == \
        derive_rng(3, "batches", 0).random(4).tolist()
    seeds = {derive_seed(3, *path) for path in [("batches", 0), ("batches", 1), ("latents", 0),
                                                 ("evaluation",), ()]}
    assert len(seeds) == 5 and all(0 <= s < 2**32 for s in seeds)
    assert derive_seed(3, "evaluation") != derive_seed(4, "evaluation")


def test_integer_paths_equal_default_rng_of_the_list() -> None:
    expected = np.random.default_rng([7, 1, 42]).integers(0, 2**31, 5)
    assert derive_rng(7, 1, 42).integers(0, 2**31, 5).tolist() == expected.tolist()


@pytest.mark.parametrize("seed", [-1, 1.5, True, "0"])
def test_bad_seeds_are_named(seed: object) -> None:
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        derive_seed(seed)
