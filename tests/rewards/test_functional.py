"""The public functional layer: pure functions on arrays under jit / vmap / grad, equal to the host-level
`score_with_steps` on a tiny random model, finite with fully padded rows, and the trainer's loss made of them."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from rm_helpers import random_trajectories

from agentrm_jax.models import ModelConfig, init_model
from agentrm_jax.rewards import (ExplicitRM, HeadConfig, ImplicitPRM, ScoringConfig, ValueHead, ValueModel,
                                 aggregate_steps, bradley_terry_loss, explicit_batch_scores, explicit_scores, implicit_batch_scores, implicit_scores, judge_yes_probability,
                                 masked_sum, outcome_loss, render_padded, step_rewards, token_log_ratios, unpad,
                                 value_head, value_targets_loss, yes_probability)
from agentrm_jax.rewards.implicit import AGGREGATIONS
from agentrm_jax.training.losses import loss_sums, valid_rows

VOCAB = 49152  # the bundled tokenizer's


@pytest.fixture(scope="module")
def value_model():
    return ValueModel.create(init_model(ModelConfig.tiny(vocab_size=VOCAB), seed=0), seed=1)


@pytest.fixture(scope="module")
def lms():
    config = ModelConfig.tiny(vocab_size=VOCAB)
    return init_model(config, seed=0), init_model(config, seed=1)


@pytest.fixture(scope="module")
def trajectories():
    return random_trajectories(6, seed=3, max_steps=4)


def _assert_same(got, expected):
    (scores, steps), (want, want_steps) = got, expected
    np.testing.assert_allclose(scores, want, rtol=0, atol=1e-6)
    assert len(steps) == len(want_steps)
    for a, b in zip(steps, want_steps):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)  # NaN where the host says NaN


# ----------------------------------------------------------------------- equality with score_with_steps


@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_explicit_under_jax_jit_equals_score_with_steps(value_model, bundled_tokenizer, trajectories, loss):
    expected = ExplicitRM(value_model, bundled_tokenizer, loss=loss).score_with_steps(trajectories)
    arrays, rendered = render_padded(trajectories, bundled_tokenizer)
    graphdef, state = nnx.split(value_model)
    fn = jax.jit(lambda state, batch: explicit_batch_scores(nnx.merge(graphdef, state), batch, loss=loss))
    scores, steps = fn(state, arrays)
    assert scores.shape == (8,) and steps.shape[0] == 8  # 6 rows padded to a power of two
    _assert_same(unpad(rendered, scores, steps, steps_at="prefix_ends"), expected)


def test_explicit_under_nnx_jit_and_with_explicit_shardings(value_model, bundled_tokenizer, trajectories):
    expected = ExplicitRM(value_model, bundled_tokenizer).score_with_steps(trajectories)
    arrays, rendered = render_padded(trajectories, bundled_tokenizer)
    # 1. the module itself, under nnx.jit
    got = nnx.jit(explicit_batch_scores, static_argnames="loss")(value_model, arrays, loss="mse")
    _assert_same(unpad(rendered, *got, steps_at="prefix_ends"), expected)
    # 2. (graphdef, state) under jax.jit with explicit shardings (a 1-device mesh: the sharded path on CPU)
    mesh = Mesh(np.asarray(jax.devices()[:1]).reshape(1), ("data",))
    graphdef, state = nnx.split(value_model)
    replicated = NamedSharding(mesh, P())
    rows = NamedSharding(mesh, P("data"))
    state_shardings = jax.tree.map(lambda _: replicated, state)
    fn = jax.jit(lambda state, batch: explicit_batch_scores(nnx.merge(graphdef, state), batch),
                 in_shardings=(state_shardings, {k: rows for k in arrays}), out_shardings=(rows, rows))
    got = fn(jax.device_put(state, state_shardings), arrays)
    _assert_same(unpad(rendered, *got, steps_at="prefix_ends"), expected)


@pytest.mark.parametrize("how", AGGREGATIONS)
def test_implicit_under_jit_equals_score_with_steps(lms, bundled_tokenizer, trajectories, how):
    policy, reference = lms
    expected = ImplicitPRM(policy, reference, bundled_tokenizer, beta=0.5, aggregate=how,
                           config=ScoringConfig(batch_size=4)).score_with_steps(trajectories)
    arrays, rendered = render_padded(trajectories, bundled_tokenizer)
    (g, s), (rg, rs) = nnx.split(policy), nnx.split(reference)

    @functools.partial(jax.jit, static_argnames="how")
    def fn(s, rs, batch, beta, how):
        return implicit_batch_scores(nnx.merge(g, s), nnx.merge(rg, rs), batch, beta=beta, how=how)

    got = fn(s, rs, arrays, jnp.float32(0.5), how)
    _assert_same(unpad(rendered, *got), expected)


def test_logit_judge_functions_match_the_forward_and_ignore_padding(lms):
    model = lms[0]
    rng = np.random.default_rng(0)
    ids = rng.integers(0, VOCAB, (3, 20)).astype(np.int32)
    lengths = np.asarray([20, 7, 12])
    right = np.arange(20)[None] < lengths[:, None]
    yes, no = jnp.asarray([5, 17, 300]), jnp.asarray([9, 41])
    p, mass = jax.jit(judge_yes_probability)(model, ids, right, yes, no)
    logits = model(ids, right)[np.arange(3), lengths - 1]  # [3, V]: the next token after the last real one
    probs = np.exp(np.asarray(logits, np.float64) - np.logaddexp.reduce(np.asarray(logits, np.float64), axis=-1,
                                                                        keepdims=True))
    py, pn = probs[:, [5, 17, 300]].sum(-1), probs[:, [9, 41]].sum(-1)
    np.testing.assert_allclose(p, py / (py + pn), rtol=1e-5)
    np.testing.assert_allclose(mass, py + pn, rtol=1e-5)
    # the same prompts left-padded: same answer
    left_ids, left = np.zeros_like(ids), np.zeros_like(right)
    for row, n in enumerate(lengths):
        left_ids[row, 20 - n:], left[row, 20 - n:] = ids[row, :n], True
    p_left, _ = jax.jit(judge_yes_probability)(model, left_ids, left, yes, no)
    np.testing.assert_allclose(p_left, p, atol=1e-5)


# ------------------------------------------------------------------------------ array-level functions


@pytest.mark.parametrize("head_config", [HeadConfig(), HeadConfig(mlp_size=7, bias=True)])
def test_value_head_function_is_the_module(head_config):
    head = ValueHead(40, head_config, rngs=nnx.Rngs(3))
    hidden = jax.random.normal(jax.random.key(0), (2, 5, 40))
    params = nnx.to_pure_dict(nnx.state(head))
    assert set(params) == set(head.params())
    # jitted vs eager: the same math, fused differently (bit-equal on some hosts, 1e-9 apart on others)
    np.testing.assert_allclose(jax.jit(value_head)(params, hidden), head(hidden), rtol=1e-5, atol=1e-7)
    assert value_head(params, hidden.astype(jnp.bfloat16)).dtype == jnp.float32


def test_explicit_scores_read_positions_and_zero_the_missing():
    values = jnp.asarray([[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0]])
    index = jnp.asarray([[3, -1], [0, 2]])
    np.testing.assert_allclose(explicit_scores(values, index), [[3.0, 0.0], [4.0, 6.0]])
    np.testing.assert_allclose(explicit_scores(values, index, loss="bce"),
                               [[jax.nn.sigmoid(3.0), 0.0], [jax.nn.sigmoid(4.0), jax.nn.sigmoid(6.0)]])


def test_vmap_over_a_leading_axis_equals_a_loop():
    key = jax.random.key(1)
    token = jax.random.normal(key, (3, 2, 10))  # [K, B, T]: K candidate batches
    starts = jnp.asarray([[[0, 4, -1], [2, 5, 8]]] * 3)
    ends = jnp.asarray([[[3, 6, -1], [4, 7, 9]]] * 3)
    for how in AGGREGATIONS:
        batched = jax.vmap(lambda t, s, e: implicit_scores(t, s, e, how))(token, starts, ends)
        for k in range(3):
            one = implicit_scores(token[k], starts[k], ends[k], how)
            np.testing.assert_allclose(batched[0][k], one[0], rtol=1e-6)
            np.testing.assert_allclose(batched[1][k], one[1], rtol=1e-6)
    values = jax.random.normal(key, (3, 2, 10))
    index = jnp.asarray([[[9, -1], [3, 4]]] * 3)
    np.testing.assert_allclose(jax.vmap(explicit_scores)(values, index),
                               np.stack([explicit_scores(values[k], index[k]) for k in range(3)]))
    logits = jax.random.normal(key, (3, 2, 50))
    p, _ = jax.vmap(yes_probability, in_axes=(0, None, None))(logits, jnp.asarray([1, 2]), jnp.asarray([3]))
    np.testing.assert_allclose(p[2], yes_probability(logits[2], jnp.asarray([1, 2]), jnp.asarray([3]))[0],
                               rtol=1e-6)


def test_masked_sum_keeps_nan_at_invalid_entries_out_of_value_and_gradient():
    per = jnp.asarray([1.0, jnp.nan, 2.0])
    valid = jnp.asarray([True, False, True])
    total, count = masked_sum(per, valid)
    assert float(total) == 3.0 and float(count) == 2.0
    grad = jax.grad(lambda x: masked_sum(x * 2.0, valid)[0])(per)
    np.testing.assert_array_equal(grad, [2.0, 0.0, 2.0])


# --------------------------------------------------------------------- gradients with fully padded rows


def _all_finite(tree) -> bool:
    return all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(tree))


def test_array_level_gradients_are_finite_with_fully_padded_rows():
    key = jax.random.key(2)
    values = jax.random.normal(key, (3, 8))
    none = -jnp.ones((3, 2), jnp.int32)  # no position at all
    index = none.at[0].set(jnp.asarray([7, 2]))  # row 0 real, rows 1-2 fully padded
    targets = jnp.asarray([[0.3, 1.0], [jnp.nan, jnp.nan], [0.0, 0.0]])  # NaN targets at padding
    for loss in ("mse", "bce"):
        g = jax.jit(jax.grad(lambda v: value_targets_loss(v, index, targets, loss=loss)))(values)
        assert _all_finite(g) and float(jnp.abs(g[1:]).max()) == 0.0
        g = jax.grad(lambda v: value_targets_loss(v, none, targets, loss=loss))(values)  # nothing valid
        assert _all_finite(g) and float(jnp.abs(g).max()) == 0.0
        g = jax.grad(lambda v: jnp.sum(explicit_scores(v, index, loss=loss)))(values)
        assert _all_finite(g)
    tokens = jax.random.normal(key, (3, 8))
    starts, ends = index.at[0, 1].set(0), index.at[0].set(jnp.asarray([7, 1]))
    for how in AGGREGATIONS:
        g = jax.jit(jax.grad(lambda t: jnp.sum(implicit_scores(t, starts, ends, how)[0])))(tokens)
        assert _all_finite(g), how
        if how != "sum":  # "sum" reads every token reward (zero off the agent mask upstream), the others the steps'
            assert float(jnp.abs(g[1:]).max()) == 0.0, how
        g = jax.grad(lambda r: jnp.sum(aggregate_steps(r, jnp.zeros((3, 2), bool), how)))(tokens[:, :2])
        assert _all_finite(g), how
    grads = jax.grad(lambda r, y: outcome_loss(r, y, jnp.asarray([True, False, False])), argnums=(0, 1))(
        tokens[:, 0], jnp.asarray([1.0, jnp.nan, 0.0]))
    assert _all_finite(grads)
    g = jax.grad(lambda c: bradley_terry_loss(c, tokens[:, 1], 0.5, valid=jnp.asarray([True, False, True])))(
        tokens[:, 0].at[1].set(jnp.nan))
    assert _all_finite(g) and float(g[1]) == 0.0
    g = jax.grad(lambda lg: jnp.sum(yes_probability(lg, jnp.asarray([1]), jnp.asarray([2]))[0]))(
        jnp.full((2, 9), -1e30).at[0].set(0.0))
    assert _all_finite(g)


def test_model_level_gradients_are_finite_with_a_fully_padded_row(value_model, lms):
    rng = np.random.default_rng(1)
    ids = rng.integers(0, VOCAB, (2, 16)).astype(np.int32)
    mask = np.zeros((2, 16), bool)
    mask[0, :11] = True  # row 1 is all padding
    batch = dict(input_ids=ids, attention_mask=mask, agent_mask=mask & (np.arange(16) % 3 > 0),
                 step_starts=np.asarray([[1, 5], [-1, -1]], np.int32), step_ends=np.asarray([[3, 10], [-1, -1]],
                                                                                           np.int32),
                 prefix_ends=np.asarray([[4, 10], [-1, -1]], np.int32))
    graphdef, state = nnx.split(value_model)
    scores, grads = jax.jit(jax.value_and_grad(
        lambda s: jnp.sum(explicit_batch_scores(nnx.merge(graphdef, s), batch, loss="bce")[1])))(state)
    assert np.isfinite(float(scores)) and _all_finite(grads)
    policy, reference = lms
    (g, s), (rg, rs) = nnx.split(policy), nnx.split(reference)

    def objective(s):
        scores, steps = implicit_batch_scores(nnx.merge(g, s), nnx.merge(rg, rs), batch, beta=0.5, how="min")
        assert steps.shape == (2, 2)
        return outcome_loss(scores, jnp.asarray([1.0, 0.0])) + jnp.sum(steps)

    value, grads = jax.jit(jax.value_and_grad(objective))(s)
    assert np.isfinite(float(value)) and _all_finite(grads)
    out = implicit_batch_scores(policy, reference, batch, beta=0.5, how="mean")
    assert float(out[0][1]) == 0.0 and float(jnp.abs(out[1][1]).max()) == 0.0


def test_token_log_ratios_are_zero_off_the_agent_mask_and_sum_to_the_steps():
    key = jax.random.key(4)
    logits, ref_logits = jax.random.normal(key, (2, 2, 6, 11))
    ids = jax.random.randint(key, (2, 6), 0, 11)
    agent = jnp.asarray([[0, 1, 1, 0, 1, 1], [0, 0, 0, 0, 0, 0]], bool)
    r = token_log_ratios(logits, ref_logits, ids, agent, 2.0)
    assert float(jnp.abs(jnp.where(agent, 0.0, r)).max()) == 0.0 and float(jnp.abs(r[0]).max()) > 0
    steps = step_rewards(r, jnp.asarray([[1, 4], [-1, -1]]), jnp.asarray([[2, 5], [-1, -1]]))
    np.testing.assert_allclose(jnp.sum(steps, -1), jnp.sum(r, -1), rtol=1e-6)


# ------------------------------------------------------------- the trainer's loss is the public losses


def test_trainer_loss_sums_are_the_public_losses(value_model, lms):
    rng = np.random.default_rng(5)
    ids = rng.integers(0, VOCAB, (4, 12)).astype(np.int32)
    mask = np.arange(12)[None] < np.asarray([12, 5, 1, 9])[:, None]
    batch = {k: jnp.asarray(v) for k, v in dict(
        input_ids=ids, attention_mask=mask, agent_mask=mask & (rng.random((4, 12)) < 0.6),
        target_index=np.asarray([[11], [4], [-1], [8]], np.int32),
        targets=rng.random((4, 1)).astype(np.float32), labels=np.asarray([1, 0, 1, 1], np.float32),
        weights=np.asarray([1, 1, 0, 1], np.float32)).items()}
    values = value_model(batch["input_ids"], batch["attention_mask"])
    for loss in ("mse", "bce"):
        total, count, _ = loss_sums(value_model, batch, kind="explicit", loss=loss)
        want = value_targets_loss(values, batch["target_index"], batch["targets"], loss=loss,
                                  valid=(batch["weights"] > 0)[:, None])
        assert float(count) == 3.0  # weight 0 and target_index -1 both drop row 2
        np.testing.assert_allclose(total / count, want, rtol=1e-6)
    total, count, scores = loss_sums(value_model, batch, kind="pairwise", margin=0.3)
    np.testing.assert_allclose(total / count, bradley_terry_loss(scores[0::2], scores[1::2], 0.3,
                                                                 valid=valid_rows(batch, "pairwise")), rtol=1e-6)
    policy, reference = lms
    total, count, scores = loss_sums(policy, batch, kind="implicit", beta=0.5, reference=reference)
    np.testing.assert_allclose(total / count, outcome_loss(scores, batch["labels"], batch["weights"] > 0),
                               rtol=1e-6)
    r = token_log_ratios(policy(ids, mask), reference(ids, mask), ids, batch["agent_mask"], 0.5)
    np.testing.assert_allclose(scores, jnp.sum(r, -1), rtol=1e-6)


def test_docs_api_lists_exactly_the_public_surface():
    import re
    from pathlib import Path

    import agentrm_jax.rewards as rewards

    doc = (Path(__file__).resolve().parents[2] / "docs" / "API.md").read_text()
    assert [name for name in rewards.__all__ if f"`{name}" not in doc] == []
    documented = set(re.findall(r"`([A-Za-z_]+)\(", doc))
    assert sorted(documented - set(rewards.__all__)) == []  # docs name no function the package does not export
