"""The trainer's input pipeline: examples, target placement, errors, shuffling, resume, host sharding, shapes."""

from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pytest

from agentrm_jax.records import PreferencePair, RecordError, Step, Trajectory, write_jsonl
from agentrm_jax.models.buckets import bucket_length
from agentrm_jax.training.data import (DataConfig, TrainBatches, collate, eval_batches, length_report,
                                       load_examples, num_eval_batches)


def make_trajectory(i: int, num_steps: int, **outcome) -> Trajectory:
    steps = tuple(Step(f"I should try door {j}", f"open door {i}-{j}", f"door {j} of room {i} is open")
                  for j in range(num_steps))
    return Trajectory(task="rooms", instruction=f"Find the key in room {i}.", steps=steps, id=f"t{i}", **outcome)


def write_trajectories(path, n: int, **kw):
    trajs = [make_trajectory(i, i % 4, value=round(i / n, 3), progress=0.5, success=bool(i % 2), **kw)
             for i in range(n)]
    write_jsonl(path, trajs)
    return trajs


def row_key(batch: dict, row: int) -> bytes:
    n = int(batch["attention_mask"][row].sum())
    return batch["input_ids"][row, :n].tobytes()


def example_keys(examples) -> dict[bytes, int]:
    keys = {}
    for i, ex in enumerate(examples):
        rows = [ex["chosen"], ex["rejected"]] if "chosen" in ex else [ex]
        for r in rows:
            keys[r["input_ids"].tobytes()] = i
    return keys


def batch_records(batch: dict, keys: dict[bytes, int]) -> list[int]:
    """Example index of each real row (filler rows skipped)."""
    return [keys[row_key(batch, r)] for r in range(batch["weights"].shape[0]) if batch["weights"][r] > 0]


def assert_batches_equal(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert np.array_equal(a[k], b[k]), k


@pytest.fixture
def explicit_set(tmp_path, bundled_tokenizer):
    path = tmp_path / "train.jsonl"
    trajs = write_trajectories(path, 10)
    config = DataConfig(kind="explicit", train=str(path), batch_size=4)
    return trajs, config, load_examples(path, config, bundled_tokenizer)


# ------------------------------------------------------------------------------------------- examples


def check_target_placement(row: dict, trajectory: Trajectory, tokenizer):
    ids, index = row["input_ids"], int(row["target_index"][0])
    assert row["input_ids"].dtype == np.int32 and row["agent_mask"].dtype == bool
    assert row["target_index"].shape == (1,) and row["target"].shape == (1,) and row["label"].shape == ()
    assert index == ids.shape[0] - 1  # the last token, where ExplicitRM.score reads a trajectory's score
    if trajectory.steps:
        last = trajectory.steps[-1]
        assert tokenizer.decode(ids).rstrip().endswith("<|im_end|>")
        assert (last.observation or last.action) in tokenizer.decode(ids[-64:])


def test_explicit_examples(explicit_set, bundled_tokenizer):
    trajs, config, examples = explicit_set
    assert len(examples) == len(trajs)
    for ex, t in zip(examples, trajs):
        check_target_placement(ex, t, bundled_tokenizer)
        assert ex["target"][0] == np.float32(t.value) and ex["label"] == np.float32(t.value)
    assert any(not t.steps for t in trajs) and any(len(t.steps) == 3 for t in trajs)
    report = length_report(examples)
    assert report["count"] == report["rows"] == 10 and report["truncated"] == 0
    assert report["max_tokens"] == max(ex["input_ids"].shape[0] for ex in examples)


@pytest.mark.parametrize("target, expected", [("progress", lambda t: 0.5), ("success", lambda t: float(t.success))])
def test_explicit_other_target_fields(tmp_path, bundled_tokenizer, target, expected):
    path = tmp_path / "train.jsonl"
    trajs = write_trajectories(path, 4)
    config = DataConfig(kind="explicit", train=str(path), target=target)
    examples = load_examples(path, config, bundled_tokenizer)
    assert [float(ex["target"][0]) for ex in examples] == [expected(t) for t in trajs]


def test_implicit_examples(tmp_path, bundled_tokenizer):
    path = tmp_path / "train.jsonl"
    trajs = write_trajectories(path, 6)
    config = DataConfig(kind="implicit", train=str(path), batch_size=8)
    assert config.target_field == "success"
    examples = load_examples(path, config, bundled_tokenizer)
    assert [float(ex["label"]) for ex in examples] == [float(t.success) for t in trajs] == [0, 1, 0, 1, 0, 1]
    for ex, t in zip(examples, trajs):
        check_target_placement(ex, t, bundled_tokenizer)
        agent_text = bundled_tokenizer.decode(ex["input_ids"][ex["agent_mask"]])
        for step in t.steps:
            assert f"Action: {step.action}" in agent_text
            assert step.observation not in agent_text
    batch = collate(examples, config, batch_rows=8)
    assert np.array_equal(batch["labels"][:6], [0, 1, 0, 1, 0, 1]) and np.array_equal(batch["weights"][6:], [0, 0])
    assert np.array_equal(batch["agent_mask"][0, :examples[0]["input_ids"].shape[0]], examples[0]["agent_mask"])


def test_pairwise_examples_are_interleaved(tmp_path, bundled_tokenizer):
    path = tmp_path / "pairs.jsonl"
    pairs = [PreferencePair(make_trajectory(i, 2, success=True), make_trajectory(100 + i, 1 + i % 2, success=False),
                            id=f"p{i}") for i in range(5)]
    write_jsonl(path, pairs)
    config = DataConfig(kind="pairwise", train=str(path), batch_size=3, target="value")  # target ignored
    examples = load_examples(path, config, bundled_tokenizer)
    for ex, p in zip(examples, pairs):
        check_target_placement(ex["chosen"], p.chosen, bundled_tokenizer)
        check_target_placement(ex["rejected"], p.rejected, bundled_tokenizer)
    assert length_report(examples)["rows"] == 10
    batch = next(eval_batches(examples, config))
    assert batch["input_ids"].shape[0] == 6  # 3 pairs -> 6 rows
    for i in range(3):
        for row, side, label in ((2 * i, "chosen", 1.0), (2 * i + 1, "rejected", 0.0)):
            want = examples[i][side]
            n = want["input_ids"].shape[0]
            assert np.array_equal(batch["input_ids"][row, :n], want["input_ids"])
            assert batch["target_index"][row, 0] == want["target_index"][0]
            assert batch["labels"][row] == label and batch["targets"][row, 0] == 0
    last = list(eval_batches(examples, config))[-1]  # pairs 3, 4 and one filler pair
    assert np.array_equal(last["weights"], [1, 1, 1, 1, 0, 0])
    assert np.array_equal(last["target_index"][4:, 0], [-1, -1])


def test_truncation_warns_and_keeps_the_target(tmp_path, bundled_tokenizer):
    path = tmp_path / "long.jsonl"
    trajs = [make_trajectory(i, 12, value=0.5) for i in range(3)]
    write_jsonl(path, trajs)
    config = DataConfig(kind="explicit", train=str(path), max_length=96)
    with pytest.warns(UserWarning, match=r"3 trajectories exceeded max_length=96"):
        examples = load_examples(path, config, bundled_tokenizer)
    for ex, t in zip(examples, trajs):
        assert ex["input_ids"].shape[0] <= 96 and ex["truncated"]
        check_target_placement(ex, t, bundled_tokenizer)
    assert length_report(examples)["truncated"] == 3


def test_record_with_a_huge_last_observation_keeps_its_scoring_token(tmp_path, bundled_tokenizer):
    path = tmp_path / "huge_obs.jsonl"
    huge = Trajectory(task="t", instruction="hi", steps=(Step("", "look", "sand " * 200),), value=0.2)
    write_jsonl(path, [make_trajectory(0, 1, value=0.1), huge])
    config = DataConfig(kind="explicit", train=str(path), max_length=96)
    with pytest.warns(UserWarning, match="1 trajectories exceeded"):
        examples = load_examples(path, config, bundled_tokenizer)
    assert [float(ex["target"][0]) for ex in examples] == [np.float32(0.1), np.float32(0.2)]
    assert examples[1]["input_ids"].shape[0] == 96 and examples[1]["target_index"][0] == 95


# ------------------------------------------------------------------------------------------- errors


def test_missing_target_names_file_line_and_field(tmp_path, bundled_tokenizer):
    path = tmp_path / "noval.jsonl"
    records = [make_trajectory(i, 1, value=0.3).to_dict() for i in range(3)]
    del records[2]["value"]
    path.write_text("\n".join(json.dumps(r) for r in records[:2]) + "\n\n" + json.dumps(records[2]) + "\n")
    config = DataConfig(kind="explicit", train=str(path))
    with pytest.raises(RecordError, match=r"noval\.jsonl:4: .*'value'") as info:
        load_examples(path, config, bundled_tokenizer)
    assert info.value.line == 4 and info.value.field == "value"
    implicit = DataConfig(kind="implicit", train=str(path))  # default target "success": no record has it
    with pytest.raises(RecordError, match=r"noval\.jsonl:1: .*'success'"):
        load_examples(path, implicit, bundled_tokenizer)


@pytest.mark.parametrize("kind, line, pattern", [
    ("explicit", '{"task": "t", "instruction": "i", "value": 0.5', r"bad\.jsonl:2: invalid JSON"),
    ("explicit", '{"task": "t", "instruction": "i", "steps": {}, "value": 0.5}', r"bad\.jsonl:2: .*'steps'"),
    ("explicit", '{"task": "t", "instruction": "i", "value": 1.5}', r"bad\.jsonl:2: .*'value'"),
    ("pairwise", '{"id": "p", "chosen": {"task": "t", "instruction": "i"}}', r"bad\.jsonl:2: .*'rejected'"),
    ("pairwise", '{"chosen": {"task": "t"}, "rejected": {"task": "t", "instruction": "i"}}',
     r"bad\.jsonl:2: .*'chosen\.instruction'"),
])
def test_malformed_rows_name_file_line_and_field(tmp_path, bundled_tokenizer, kind, line, pattern):
    good = make_trajectory(0, 1, value=0.5).to_dict()
    first = {"chosen": good, "rejected": good} if kind == "pairwise" else good
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(first) + "\n" + line + "\n")
    with pytest.raises(RecordError, match=pattern):
        load_examples(path, DataConfig(kind=kind, train=str(path)), bundled_tokenizer)


def test_missing_file_names_the_config_field(tmp_path, bundled_tokenizer):
    config = DataConfig(kind="explicit", train=str(tmp_path / "a.jsonl"), eval=str(tmp_path / "nope.jsonl"))
    with pytest.raises(FileNotFoundError, match=r"nope\.jsonl.*DataConfig\.eval"):
        load_examples(config.eval, config, bundled_tokenizer, field="eval")


@pytest.mark.parametrize("field, value", [
    ("kind", "ranking"), ("train", ""), ("eval", 3), ("target", "reward"), ("batch_size", 0), ("batch_size", 2.0),
    ("max_length", 4), ("min_length_bucket", 0), ("seed", -1), ("seed", 2**32), ("seed", True),
])
def test_config_validation_names_the_field(field, value):
    kwargs = {"kind": "explicit", "train": "x.jsonl", field: value}
    with pytest.raises(ValueError, match=rf"DataConfig\.{field} "):
        DataConfig(**kwargs)


def test_collate_rejects_too_many_rows_and_short_length(explicit_set):
    _, config, examples = explicit_set
    with pytest.raises(ValueError, match="more than batch_rows=2"):
        collate(examples[:3], config, batch_rows=2)
    with pytest.raises(ValueError, match="shorter than the longest row"):
        collate(examples, config, batch_rows=10, length=16)


# ----------------------------------------------------------------------------------------- training order


def take(batches, n):
    return [next(batches) for _ in range(n)]


def test_shuffle_is_deterministic_and_each_epoch_is_a_permutation(explicit_set):
    _, config, examples = explicit_set
    keys = example_keys(examples)
    a, b = take(TrainBatches(examples, config), 10), take(TrainBatches(examples, config), 10)
    for x, y in zip(a, b):
        assert_batches_equal(x, y)
    order = [i for batch in a for i in batch_records(batch, keys)]  # 40 records = 4 epochs of 10
    epochs = [order[e * 10:(e + 1) * 10] for e in range(4)]
    for epoch in epochs:
        assert sorted(epoch) == list(range(10))
    assert len({tuple(e) for e in epochs}) == 4, "each epoch should have its own order"
    assert epochs[0] != list(range(10))
    other = take(TrainBatches(examples, dataclasses.replace(config, seed=1)), 10)
    other_order = [i for batch in other for i in batch_records(batch, keys)]
    assert other_order != order
    assert other_order[:10] not in epochs  # not merely a shifted epoch of seed 0 (grain reseeds with seed + epoch)


def test_batch_size_one_streams_every_record_each_epoch(explicit_set):
    """batch_size 1 used to fail in grain (its endless repeat's length overflowed len()); now it streams
    one record a step, each epoch a permutation, and pairs of batch-1 steps follow batch-2's order."""
    _, config, examples = explicit_set
    keys = example_keys(examples)
    ones = take(TrainBatches(examples, dataclasses.replace(config, batch_size=1)), 20)
    order = [i for batch in ones for i in batch_records(batch, keys)]
    assert sorted(order[:10]) == list(range(10)) and sorted(order[10:]) == list(range(10))
    twos = take(TrainBatches(examples, dataclasses.replace(config, batch_size=2)), 10)
    assert order == [i for batch in twos for i in batch_records(batch, keys)]


def test_epoch_counter(explicit_set):
    _, config, examples = explicit_set
    batches = TrainBatches(examples, config)
    assert batches.epoch == 0
    take(batches, 5)
    assert batches.epoch == pytest.approx(2.0) and batches.step == 5


@pytest.mark.parametrize("stop", [0, 2, 3, 7])  # 2 -> batch 3 straddles the first epoch boundary
def test_resume_is_bitwise_identical(explicit_set, stop):
    _, config, examples = explicit_set
    original = TrainBatches(examples, config)
    take(original, stop)
    state = json.loads(json.dumps(original.get_state()))
    expected = take(original, 4)
    resumed = TrainBatches(examples, config)
    take(resumed, 1)  # a consumed iterator is rewound too
    resumed.set_state(state)
    for want, got in zip(expected, take(resumed, 4)):
        assert_batches_equal(want, got)
    assert resumed.get_state() == original.get_state()


def test_resume_refuses_a_different_order(explicit_set):
    _, config, examples = explicit_set
    state = TrainBatches(examples, config).get_state()
    other = TrainBatches(examples, dataclasses.replace(config, seed=5))
    with pytest.raises(ValueError, match="seed=0 .* seed=5"):
        other.set_state(state)
    with pytest.raises(ValueError, match="num_examples"):
        TrainBatches(examples[:9], config).set_state(state)


@pytest.mark.parametrize("kind, n", [("explicit", 8), ("explicit", 7), ("pairwise", 8)])
def test_host_shards_partition_the_global_batch(tmp_path, bundled_tokenizer, kind, n):
    path = tmp_path / "d.jsonl"
    if kind == "pairwise":
        write_jsonl(path, [PreferencePair(make_trajectory(i, i % 3), make_trajectory(50 + i, 1)) for i in range(n)])
    else:
        write_trajectories(path, n)
    config = DataConfig(kind=kind, train=str(path), batch_size=4)
    examples = load_examples(path, config, bundled_tokenizer)
    keys = example_keys(examples)
    whole = take(TrainBatches(examples, config), 6)
    hosts = [take(TrainBatches(examples, config, process_index=p, process_count=2), 6) for p in range(2)]
    for step, g in enumerate(whole):
        h0, h1 = hosts[0][step], hosts[1][step]
        assert h0["input_ids"].shape == h1["input_ids"].shape == (g["input_ids"].shape[0] // 2, g["input_ids"].shape[1])
        r0, r1 = batch_records(h0, keys), batch_records(h1, keys)
        if n % config.batch_size == 0:  # else a batch straddling an epoch boundary may hold an example twice
            assert not set(r0) & set(r1)
        assert r0 + r1 == batch_records(g, keys)
        for k in g:  # the hosts' rows stacked are exactly the global batch
            assert np.array_equal(np.concatenate([h0[k], h1[k]]), g[k]), k
    with pytest.raises(ValueError, match="not divisible by process_count=3"):
        TrainBatches(examples, config, process_index=0, process_count=3)


def test_shapes_are_bounded_by_the_length_buckets(tmp_path, bundled_tokenizer):
    path = tmp_path / "mixed.jsonl"
    write_jsonl(path, [make_trajectory(i, (i * 7) % 13, value=0.5) for i in range(24)])
    config = DataConfig(kind="explicit", train=str(path), batch_size=3, max_length=300, min_length_bucket=32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        examples = load_examples(path, config, bundled_tokenizer)
    batches = take(TrainBatches(examples, config), 40)
    allowed = {bucket_length(n, 32) for n in range(1, 301)}
    shapes = {b["input_ids"].shape for b in batches}
    assert {r for r, _ in shapes} == {3} and {length for _, length in shapes} <= allowed
    assert len(shapes) >= 2  # lengths do vary by bucket
    for b in batches:
        real = b["attention_mask"].sum(axis=1)
        assert b["input_ids"].shape[1] == bucket_length(int(real.max()), 32)
        assert np.all(b["weights"] == 1) and np.all(b["target_index"][:, 0] < real)
        assert np.all(b["input_ids"][~b["attention_mask"]] == 0)


# ----------------------------------------------------------------------------------------------- eval


@pytest.mark.parametrize("process_count", [1, 2])
def test_eval_batches_cover_every_example_once(explicit_set, process_count):
    _, config, examples = explicit_set
    keys = example_keys(examples)
    per_host = [list(eval_batches(examples, config, process_index=p, process_count=process_count))
                for p in range(process_count)]
    assert {len(h) for h in per_host} == {num_eval_batches(len(examples), config)} == {3}
    seen = [i for step in zip(*per_host) for b in step for i in batch_records(b, keys)]
    assert seen == list(range(10))  # file order, each once
    last = [h[-1] for h in per_host]
    weights = np.concatenate([b["weights"] for b in last])
    assert np.array_equal(weights, [1, 1, 0, 0])  # 10 = 4 + 4 + 2: two filler rows
    for b in last:
        filler = b["weights"] == 0
        assert np.all(b["target_index"][filler] == -1) and np.all(b["attention_mask"][:, 0])
        assert np.all(b["attention_mask"][filler].sum(axis=1) == 1) and not b["agent_mask"][filler].any()
