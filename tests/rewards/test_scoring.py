"""The batched scorer: batch/padding/bucket invariance, compile counts, over-long input, save/load, HF parity."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from rm_helpers import random_trajectories

from agentrm_jax.records import Step, Trajectory
from agentrm_jax.models import ModelConfig, init_model
from agentrm_jax.rewards import (ExplicitRM, HeadConfig, ScoringConfig, ValueModel, compile_counts,
                                 load_value_model, save_value_model)


@pytest.fixture(scope="module")
def value_model():
    return ValueModel.create(init_model(ModelConfig.tiny(vocab_size=49152), seed=0), seed=1)


def test_scores_do_not_depend_on_batch_composition(value_model, bundled_tokenizer):
    trajectories = random_trajectories(32, seed=0)
    lengths = {len(t.steps) for t in trajectories}
    assert 0 in lengths and len(lengths) >= 4
    reference = None
    rng = np.random.default_rng(0)
    for batch_size in (1, 7, 32):
        order = rng.permutation(32)
        rm = ExplicitRM(value_model, bundled_tokenizer, config=ScoringConfig(batch_size=batch_size))
        scores, steps = rm.score_with_steps([trajectories[i] for i in order])
        back = np.empty_like(scores)
        back[order] = scores
        steps_back = [None] * 32
        for k, i in enumerate(order):
            steps_back[i] = steps[k]
        if reference is None:
            reference = back, steps_back
            continue
        np.testing.assert_allclose(back, reference[0], atol=1e-5)
        for a, b in zip(steps_back, reference[1]):
            np.testing.assert_allclose(a, b, atol=1e-5)
    assert all(len(s) == len(t.steps) for s, t in zip(reference[1], trajectories))
    # a trajectory's last step score is read where its score is, after the last observation: they agree
    assert sum(len(s) > 0 for s in reference[1]) >= 16
    for s, x in zip(reference[1], reference[0]):
        if len(s):
            np.testing.assert_allclose(s[-1], x, atol=1e-5)


@pytest.mark.parametrize("tokenizer_fixture", ["bundled_tokenizer", "llama3_style_tokenizer"])
def test_step_scores_are_the_scores_of_the_matching_prefixes(request, tokenizer_fixture):
    # The head is trained at the last token of (prefix) trajectories; step i's score must be read at
    # the same state: the score of t.prefix(i + 1) scored as a whole trajectory.
    tokenizer = request.getfixturevalue(tokenizer_fixture)
    model = ValueModel.create(init_model(ModelConfig.tiny(vocab_size=len(tokenizer)), seed=0), seed=1)
    trajectories = random_trajectories(8, seed=5, max_steps=5)
    trajectories.append(Trajectory("maze", "no observations", (Step("", "look", ""), Step("x", "go", ""))))
    rm = ExplicitRM(model, tokenizer, config=ScoringConfig(batch_size=8))
    for loss in ("mse", "bce"):
        rm.loss = loss
        _, steps = rm.score_with_steps(trajectories)
        prefixes = [t.prefix(i + 1) for t in trajectories for i in range(len(t))]
        assert len(prefixes) >= 10
        np.testing.assert_allclose(np.concatenate(steps), rm.score(prefixes), atol=1e-5)


def test_compilations_are_bounded_by_buckets(value_model, bundled_tokenizer):
    from agentrm_jax.rewards.scoring import plan_batches

    rm = ExplicitRM(value_model, bundled_tokenizer, config=ScoringConfig(batch_size=4))
    trajectories = random_trajectories(20, seed=7)
    lengths = [r.length for r in rm.scorer.render(trajectories)]
    batches = plan_batches(lengths, 4)
    before = compile_counts()["explicit"]
    rm.score(trajectories)
    after_first = compile_counts()["explicit"]
    assert after_first - before <= len(batches)  # at most one program per batch shape
    rm.score(trajectories[::-1])  # the same batches in another order
    # Equal trajectories (new objects) forming two whole batches of the first call: shapes it compiled.
    # (A partial batch, e.g. the first 9, pads to batch 1: a shape the first call never used.)
    picked = np.concatenate([batches[3], batches[1]])
    assert sorted(map(sorted, plan_batches([lengths[i] for i in picked], 4))) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    fresh = random_trajectories(20, seed=7)
    rm.score([fresh[i] for i in picked])
    assert compile_counts()["explicit"] == after_first  # same shapes: no new compile
    assert rm.scorer.tokens_padded >= rm.scorer.tokens_scored > 0


def test_over_long_trajectories_warn_and_still_score(value_model, bundled_tokenizer):
    long = Trajectory("maze", "goal", tuple(Step("t", f"a{i}", "obs " * 30) for i in range(20)))
    rm = ExplicitRM(value_model, bundled_tokenizer, config=ScoringConfig(max_length=200))
    with pytest.warns(UserWarning, match="1 of 2 trajectories exceeded max_length=200"):
        scores, steps = rm.score_with_steps([long, long.prefix(1)])
    assert np.isfinite(scores).all() and np.isnan(steps[0][0]) and np.isfinite(steps[0][-1])
    assert np.isfinite(steps[1]).all()


def test_empty_trajectory_and_bad_config(value_model, bundled_tokenizer):
    rm = ExplicitRM(value_model, bundled_tokenizer)
    scores, steps = rm.score_with_steps([Trajectory("maze", "only an instruction")])
    assert np.isfinite(scores[0]) and steps[0].shape == (0,)
    assert rm.score([]).shape == (0,)
    with pytest.raises(TypeError, match="list of trajectories"):
        rm.score(Trajectory("maze", "x"))
    with pytest.raises(ValueError, match="batch_size"):
        ScoringConfig(batch_size=0)
    with pytest.raises(ValueError, match="loss must be one of"):
        ExplicitRM(value_model, bundled_tokenizer, loss="l1")


@pytest.mark.parametrize("head", [HeadConfig(), HeadConfig(mlp_size=8, bias=True)])
def test_save_load_round_trip(tmp_path, value_model, bundled_tokenizer, head):
    model = ValueModel.create(value_model.backbone, head, seed=3)
    save_value_model(model, tmp_path / "rm", loss="bce", tokenizer=bundled_tokenizer, extra={"note": "x"})
    loaded, loss, meta = load_value_model(tmp_path / "rm")
    assert loss == "bce" and meta["note"] == "x" and loaded.head.config == head
    trajectories = random_trajectories(5, seed=1)
    a = ExplicitRM(model, bundled_tokenizer, loss="bce").score(trajectories)
    b = ExplicitRM(loaded, bundled_tokenizer, loss=loss).score(trajectories)
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert ((a > 0) & (a < 1)).all()  # bce: sigmoid scores
    assert (tmp_path / "rm" / "value_head.safetensors").exists() == (not head.hf_compatible)


def test_hf_sequence_classifier_parity(tmp_path, bundled_tokenizer):
    """An RM trained elsewhere (transformers' LlamaForSequenceClassification) scores the same here, and ours
    exported loads in transformers with the same scores."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    from agentrm_jax.rewards.scoring import pad_batch

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=49152, hidden_size=48, intermediate_size=80, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, num_labels=1, pad_token_id=2,
                         tie_word_embeddings=False, max_position_embeddings=1024)
    theirs = LlamaForSequenceClassification(config).eval()
    theirs.save_pretrained(tmp_path / "hf")
    model, loss, meta = load_value_model(tmp_path / "hf")
    assert loss == "mse" and meta == {}
    trajectories = random_trajectories(6, seed=2)
    rm = ExplicitRM(model, bundled_tokenizer, config=ScoringConfig(batch_size=4))
    ours = rm.score(trajectories)
    rendered = rm.scorer.render(trajectories)
    arrays = pad_batch(rendered, batch=6, length=max(r.length for r in rendered), steps=8)
    ids = torch.tensor(np.where(arrays["attention_mask"], arrays["input_ids"], 2).astype(np.int64))
    with torch.no_grad():
        expected = theirs(input_ids=ids, attention_mask=torch.tensor(arrays["attention_mask"])).logits[:, 0].numpy()
    np.testing.assert_allclose(ours, expected, atol=1e-4)
    save_value_model(model, tmp_path / "ours")
    again = LlamaForSequenceClassification.from_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        exported = again(input_ids=ids, attention_mask=torch.tensor(arrays["attention_mask"])).logits[:, 0].numpy()
    np.testing.assert_allclose(exported, expected, atol=1e-4)


def test_refuses_directories_that_are_not_one_label_classifiers(tmp_path, value_model):
    save_value_model(value_model, tmp_path / "rm")
    config = json.loads((tmp_path / "rm" / "config.json").read_text())
    (tmp_path / "rm" / "config.json").write_text(json.dumps({**config, "num_labels": 2}))
    with pytest.raises(ValueError, match="num_labels=2"):
        load_value_model(tmp_path / "rm")
    (tmp_path / "rm" / "config.json").write_text(json.dumps({**config, "architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(ValueError, match="not a sequence classifier"):
        load_value_model(tmp_path / "rm")
    with pytest.raises(FileNotFoundError, match="config.json is missing"):
        load_value_model(tmp_path / "nothing")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # loading a good directory warns about nothing
        (tmp_path / "rm" / "config.json").write_text(json.dumps(config))
        load_value_model(tmp_path / "rm")
