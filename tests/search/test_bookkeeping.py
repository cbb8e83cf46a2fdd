"""The jitted top-W selection against a plain Python statement of the same order."""

import jax.numpy as jnp
import numpy as np
from hypothesis import given, settings, strategies as st

from agentrm_jax.search import select_beams, select_beams_reference
from agentrm_jax.search.beam import select_beams as _jitted

SCORES = st.sampled_from([0.0, -0.0, 0.25, 0.5, 1.0, -1.0, 3.0, float("nan"), float("-inf"), float("inf")])


@st.composite
def beam_arrays(draw):
    w = draw(st.integers(1, 4))
    k = draw(st.integers(1, 4))
    width = draw(st.integers(1, 6))
    # few distinct values, so ties are common; a float draw as well for general positions
    values = draw(st.lists(st.one_of(SCORES, st.floats(-5, 5, width=32)), min_size=w * k, max_size=w * k))
    valid = draw(st.lists(st.booleans(), min_size=w * k, max_size=w * k))
    return np.asarray(values, np.float32).reshape(w, k), np.asarray(valid).reshape(w, k), width


@settings(max_examples=300, deadline=None)
@given(beam_arrays())
def test_select_beams_matches_python_reference(arrays):
    scores, valid, width = arrays
    parents, samples, chosen, keep = (np.asarray(x) for x in
                                      select_beams(jnp.asarray(scores), jnp.asarray(valid), width=width))
    assert parents.shape == samples.shape == chosen.shape == keep.shape == (width,)
    got = [(int(p), int(s)) for p, s, ok in zip(parents, samples, keep) if ok]
    assert got == select_beams_reference(scores, valid, width)
    assert keep.sum() == min(width, valid.sum())
    assert list(keep) == sorted(keep, reverse=True)  # kept slots first, padding after
    for p, s, c, ok in zip(parents, samples, chosen, keep):
        if ok:
            np.testing.assert_array_equal(c, scores[p, s])


def test_non_finite_scores_rank_as_search_ranks_them():
    """+inf first, then finite, then NaN and -inf (still above invalid); -0.0 ties 0.0."""
    scores = np.array([[np.nan, 0.0, -0.0, np.inf, -np.inf, 1.0]], np.float32)
    valid = np.array([[True, True, True, True, True, False]])
    parents, samples, _, keep = select_beams(jnp.asarray(scores), jnp.asarray(valid), width=6)
    order = [int(s) for s, ok in zip(samples, keep) if ok]
    assert order == [3, 1, 2, 0, 4] == [j for _, j in select_beams_reference(scores, valid, 6)]


def test_select_beams_compiles_once_per_shape():
    before = _jitted._cache_size()
    for seed in range(5):
        rng = np.random.default_rng(seed)
        select_beams(jnp.asarray(rng.random((3, 2), np.float32)), jnp.asarray(rng.random((3, 2)) > 0.3), width=3)
    assert _jitted._cache_size() - before <= 1


def test_ties_go_to_the_earlier_beam_and_sample():
    scores = np.zeros((2, 2), np.float32)
    valid = np.ones((2, 2), bool)
    parents, samples, _, keep = select_beams(jnp.asarray(scores), jnp.asarray(valid), width=3)
    assert [(int(p), int(s)) for p, s in zip(parents, samples)] == [(0, 0), (0, 1), (1, 0)]
    assert bool(np.all(keep))
