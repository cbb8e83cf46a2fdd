"""LLM-as-a-judge reward models: reply parsing, scripted judges, and the bundled SmolLM2 as a judge."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agentrm_jax.records import Step, Trajectory
from agentrm_jax.agents.policies import SamplerPolicy
from agentrm_jax.rewards.judge import (ListwiseJudge, LogitJudge, PointwiseJudge, parse_choice,
                                       parse_score, render_transcript)
from agentrm_jax.rewards.scoring import RewardModel

INSTRUCTION = "You are in a kitchen. Your task is to put a clean apple in the fridge."
GOOD = Trajectory("kitchen", INSTRUCTION, (
    Step("I need the apple first.", "take apple from counter", "You take the apple."),
    Step("It must be clean.", "clean apple with sink", "You clean the apple."),
    Step("Now the fridge.", "put apple in fridge", "You put the clean apple in the fridge. Task complete!"),
), id="good", success=True)
OFF_TASK = Trajectory("kitchen", INSTRUCTION, (
    Step("Let me look around.", "go to bedroom", "You are in the bedroom. There is a bed."),
    Step("", "sleep", "Nothing happens."),
    Step("", "dance", "Nothing happens."),
), id="off", success=False)
STARTED = GOOD.prefix(1).replace(id="started")
NOTHING_YET = GOOD.prefix(0).replace(id="empty")


# ------------------------------------------------------------------------------------------ parsing

SCORE_CASES = [
    ("Score: 7", 7.0),
    ("7/10", 7.0),
    ("**8**", 8.0),
    ("I would rate it 6.5 out of 10", 6.5),
    ("rating = 9", 9.0),
    ("**Score:** seven", 7.0),
    ("Score: ten.", 10.0),
    ("rated nine out of ten", 9.0),
    ("I'd give this one a 7", 7.0),  # "one" is not the rating
    ("SCORE: 6\nThe agent picked up the apple.", 6.0),
    ("Score: 7\nThat score seems fair.", 7.0),
    ("I rate it 3 at first. Final score: 8", 8.0),  # the last keyword mention wins
    ("The agent reached step 3. Score: 4", 4.0),
    ("Progress made in step 2; final score: 9/10", 9.0),
    ("Score: 85/100", 8.5),
    ("4 out of 5", 8.0),
    ("Rating: 70%", 7.0),
    ("The agent is 100% close to completing the task.", 10.0),
    ("On a scale from 0 to 10, I give it 6.", 6.0),
    ("Score (0-10): 5", 5.0),
    ("Score: 0", 0.0),
    ("Score: 10", 10.0),
    ("Score: 7.5.", 7.5),
    ("score=3/10", 3.0),
    ("Rating: [8]", 8.0),
    ("a score of 0.5", 0.5),
    ("The agent did well. 6", 6.0),
    ("It is 42 and 5", 5.0),  # last standalone number inside [0, 10]
    ("I'd say 6, not 3 out of 7", 6.0),
    ("3 steps left, I'd say 6", 6.0),
    ("(6)", 6.0),
    # failures
    ("Score: 12", None),  # the keyword-tied number decides alone: out of range -> None
    ("Score: -3", None),
    ("Grade: 11/10", None),
    ("The answer is 100.", None),
    ("The agent is 10 steps away from completing the task.", None),  # a count, not a rating
    ("It is 10 out of 11", None),
    ("1. take the apple\n2. clean it", None),  # list markers
    ("1. 2nd day in the kitchen.\n2. 1st day in the kitchen.\n3.", None),  # a real SmolLM2 reply
    ("7.", 7.0),
    ("The agent is at step 3 of the task.", None),
    ("The agent has completed the task successfully.", None),
    ("Rating: N\nRate: N/A", None),
    ("", None),
]


@pytest.mark.parametrize("text,expected", SCORE_CASES)
def test_parse_score(text, expected):
    got = parse_score(text)
    assert got == expected, f"{text!r}: got {got}, expected {expected}"


CHOICE_CASES = [
    ("The best is candidate 2", 1),
    ("Best: 3", 2),
    ("**Best:** Candidate #1", 0),
    ("Candidate 2 is the best.", 1),
    ("The agent that completed the task correctly is Candidate 3.", 2),  # SmolLM2's usual phrasing
    ("Candidate 1 fails; candidate 3 is better.", 2),
    ("I choose the second", 1),
    ("The second candidate is best", 1),
    ("best one is number 2", 1),
    ("Answer: 3", 2),
    ("2", 1),
    ("Best: 7", None),  # out of range
    ("Best: 0", None),
    ("Candidate 1 and candidate 2 both tried.", None),  # ambiguous
    ("I cannot decide.", None),
    ("", None),
]


@pytest.mark.parametrize("text,expected", CHOICE_CASES)
def test_parse_choice(text, expected):
    assert parse_choice(text, 3) == expected


def test_transcript_shows_steps_but_never_the_outcome():
    text = render_transcript(GOOD)
    assert INSTRUCTION in text and "[Step 3]" in text and "Action: put apple in fridge" in text
    assert "Observation: You clean the apple." in text
    assert "success" not in text.lower() and "True" not in text
    short = render_transcript(GOOD, max_steps_shown=1)
    assert "[Step 3]" in short and "[Step 1]" not in short and "2 earlier steps not shown" in short
    assert "not taken any step" in render_transcript(NOTHING_YET)
    assert "[...]" in render_transcript(GOOD.replace(instruction="x" * 50), max_field_chars=10)


# ------------------------------------------------------------------------------------------ scripted judges


class CannedJudge:
    """A scripted PolicySampler: `answer(context_text, sample_index) -> reply`; logs every call."""

    def __init__(self, answer):
        self.answer, self.calls = answer, []

    def sample(self, contexts, n=1, temperature=0.0, seed=0):
        self.calls.append((len(contexts), n, temperature, seed))
        return [[self.answer(c[-1]["content"], j) for j in range(n)] for c in contexts]


def _by_progress(text: str, j: int) -> str:
    if "[Step 3]" in text and "dance" in text:
        return ["Score: 1", "I'd rate it 2/10", "no idea"][j % 3]  # one unparseable sample
    if "Task complete!" in text:
        return "**Score:** 10 - the apple is in the fridge."
    if "[Step 1]" in text:
        return "I'm not sure what to say."  # every sample fails
    return "Score: 5"


def test_pointwise_judge_with_a_scripted_policy():
    policy = CannedJudge(_by_progress)
    judge = PointwiseJudge(policy, n=3, temperature=0.7, seed=4)
    assert isinstance(judge, RewardModel) and judge.kind == "judge"
    scores = judge.score([GOOD, OFF_TASK, STARTED, NOTHING_YET])
    assert scores.dtype == np.float32 and scores.shape == (4,)
    np.testing.assert_allclose(scores[[0, 1, 3]], [1.0, 0.15, 0.5], rtol=1e-6)  # off-task: mean of 1 and 2
    assert math.isnan(scores[2])  # nothing parsed -> NaN, not an exception
    assert policy.calls == [(4, 3, 0.7, 4)]  # one batched call
    assert judge.failures == 1 + 3 and judge.samples == 12
    assert len(judge.last_records) == 12 and len(judge.last_outputs) == 4
    assert judge.last_outputs[2] == ["I'm not sure what to say."] * 3
    assert [r.value for r in judge.last_records if r.item == 1] == [1.0, 2.0, None]

    steps = judge.score_steps([GOOD, NOTHING_YET, OFF_TASK])
    assert [s.shape for s in steps] == [(3,), (0,), (3,)]
    assert math.isnan(steps[0][0]) and steps[0][2] == pytest.approx(1.0) and steps[2][2] == pytest.approx(0.15)
    assert policy.calls[-1][0] == 6  # all prefixes in one call
    assert judge.score([]).shape == (0,)
    with pytest.raises(TypeError, match="list of trajectories"):
        judge.score(GOOD)


def test_a_policy_returning_the_wrong_number_of_replies_is_an_error():
    class Short:
        def sample(self, contexts, n=1, temperature=0.0, seed=0):
            return [["Score: 3"]] * (len(contexts) - 1)

    with pytest.raises(ValueError, match="replies"):
        PointwiseJudge(Short()).score([GOOD, OFF_TASK])


def test_listwise_judge_picks_the_named_candidate_and_survives_garbage():
    def best_is_the_one_that_finished(text: str, j: int) -> str:
        blocks = text.split("=== Candidate ")[1:]
        done = [k + 1 for k, b in enumerate(blocks) if "Task complete!" in b]
        return f"The best is candidate {done[0]}, it put the apple away." if done else "Hmm, hard to say."

    policy = CannedJudge(best_is_the_one_that_finished)
    judge = ListwiseJudge(policy)
    assert isinstance(judge, RewardModel) and judge.kind == "judge"
    assert judge.rank([OFF_TASK, STARTED, GOOD]) == 2
    assert judge.rank([GOOD, OFF_TASK]) == 0
    prompt = judge.messages([OFF_TASK, GOOD])[0]["content"]
    assert prompt.count(INSTRUCTION) == 1 and "=== Candidate 2 ===" in prompt and "1 to 2" in prompt
    np.testing.assert_array_equal(judge.score([STARTED, GOOD, OFF_TASK]), [0.0, 1.0, 0.0])
    assert judge.failures == 0

    scores = judge.score([OFF_TASK, STARTED])  # nobody finished: the judge's reply is garbage
    np.testing.assert_array_equal(scores, [0.5, 0.5])
    assert judge.failures == 1 and judge.last_outputs == ["Hmm, hard to say."]
    assert judge.rank([OFF_TASK, STARTED]) is None and judge.failures == 2

    calls = len(policy.calls)
    np.testing.assert_array_equal(judge.score([GOOD]), [1.0])  # one candidate: no question asked
    assert len(policy.calls) == calls

    steps = judge.score_steps([GOOD, OFF_TASK, NOTHING_YET])
    assert [s.shape for s in steps] == [(3,), (3,), (0,)]
    # steps 1-2: neither prefix finished (0.5 each); step 3: GOOD wins
    np.testing.assert_array_equal(np.stack(steps[:2]), [[0.5, 0.5, 1.0], [0.5, 0.5, 0.0]])
    assert policy.calls[-1][0] == 3  # one call for the three step indices

    with pytest.raises(ValueError, match="one task"):
        judge.score([GOOD, GOOD.replace(instruction="Put a pear in the fridge.")])


# ------------------------------------------------------------------------------------------ the bundled SmolLM2


@pytest.mark.real_model
def test_pointwise_judge_on_smollm2_records_every_reply(bundled_ours):
    model, tokenizer = bundled_ours
    trajectories = [STARTED, OFF_TASK.prefix(1), NOTHING_YET]  # short: prompts fit the 256-token bucket (CPU)
    n = 2
    policy = SamplerPolicy(model, tokenizer, max_new_tokens=24)
    judge = PointwiseJudge(policy, n=n, temperature=0.7, seed=0)
    assert max(len(policy.sampler.encode(judge.messages(t))) for t in trajectories) <= 256
    scores = judge.score(trajectories)
    assert scores.shape == (3,) and scores.dtype == np.float32
    asked = len(trajectories) * n
    parsed = [r for r in judge.last_records if r.value is not None]
    failed = [r for r in judge.last_records if r.value is None]
    assert len(parsed) + len(failed) == asked == judge.samples and judge.failures == len(failed)
    assert [len(row) for row in judge.last_outputs] == [n] * len(trajectories)
    for r in judge.last_records:  # the record agrees with the raw text it keeps
        assert r.text == judge.last_outputs[r.item][r.sample]
        assert parse_score(r.text) == r.value
        assert r.value is None or 0.0 <= r.value <= 10.0
    for i, s in enumerate(scores):
        values = [r.value for r in parsed if r.item == i]
        if values:
            assert 0.0 <= s <= 1.0 and s == pytest.approx(np.mean(values) / 10.0, abs=1e-6)
        else:
            assert math.isnan(s)
    print(f"\nSmolLM2 pointwise parse rate {len(parsed)}/{asked}; scores {scores}")
    for r in judge.last_records:
        print(f"  [{r.item}.{r.sample}] {r.value}: {r.text[:100]!r}")


@pytest.mark.real_model
def test_logit_judge_on_smollm2(bundled_ours):
    model, tokenizer = bundled_ours
    trajectories = [GOOD, OFF_TASK, STARTED, NOTHING_YET]
    # one length bucket (256) for every prompt: two compilations in all (batch 4 and batch 1)
    wide = LogitJudge(model, tokenizer, batch_size=4, min_length_bucket=256)
    assert isinstance(wide, RewardModel) and wide.kind == "judge"
    assert set(wide.yes_ids) >= {tokenizer.encode("Yes")[0], tokenizer.encode(" Yes")[0]}
    assert not set(wide.yes_ids) & set(wide.no_ids)
    batched = wide.score(trajectories)
    mass = wide.last_answer_mass
    assert batched.shape == (4,) and batched.dtype == np.float32
    assert np.all((batched > 0) & (batched < 1))
    assert np.all((mass > 0) & (mass <= 1 + 1e-6))

    # batch size 1, through score_steps: prefix 1 of GOOD is STARTED, prefix 3 is GOOD itself
    narrow = LogitJudge(model, tokenizer, batch_size=1, min_length_bucket=256)
    steps = narrow.score_steps([GOOD, NOTHING_YET])
    assert [s.shape for s in steps] == [(3,), (0,)] and np.all((steps[0] > 0) & (steps[0] < 1))
    np.testing.assert_allclose(steps[0][[0, 2]], batched[[2, 0]], atol=1e-5)
    # A 135M model is a weak judge: report the ordering, do not require it.
    print(f"\nSmolLM2 P(yes): finished {batched[0]:.3f}, off-task {batched[1]:.3f}, one step {batched[2]:.3f}, "
          f"no step {batched[3]:.3f}; per prefix of the finished one {np.round(steps[0], 3)}; "
          f"yes+no mass {np.round(mass, 3)}; finished > off-task: {batched[0] > batched[1]}")
