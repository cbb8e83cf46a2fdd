"""Length buckets: always cover the length, pad little above 256 tokens, and stay few."""

import pytest
from hypothesis import given, strategies as st

from agentrm_jax.models.buckets import bucket_length, next_power_of_two


@given(st.integers(1, 20000), st.sampled_from([1, 16, 32]))
def test_bucket_covers_and_pads_under_a_quarter_above_256(n, minimum):
    b = bucket_length(n, minimum)
    assert b >= n and b >= minimum
    if n > 256:
        assert b < 1.25 * n + 1, (n, b)
    else:
        assert b == next_power_of_two(n, minimum)


def test_buckets_are_few_and_monotone():
    buckets = [bucket_length(n) for n in range(1, 4097)]
    assert buckets == sorted(buckets)
    assert sorted(set(buckets)) == [16, 32, 64, 128, 256, 320, 384, 448, 512, 640, 768, 896, 1024,
                                    1280, 1536, 1792, 2048, 2560, 3072, 3584, 4096]


def test_bad_steps_per_octave():
    with pytest.raises(ValueError, match="steps_per_octave"):
        bucket_length(300, steps_per_octave=3)
