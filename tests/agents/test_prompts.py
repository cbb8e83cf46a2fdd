"""ReAct prompts: message structure, worked examples, and parsing of messy model replies."""

from __future__ import annotations

import pytest

from agentrm_jax.agents.prompts import (ONE_SHOT, STOP_STRINGS, SYSTEM_PROMPT, action_line_complete,
                                        build_messages, count_steps, cut_after_action, example_messages,
                                        one_shot_example, parse_step, shorten_context, shortened_contexts,
                                        stable_drop_counts, task_message)
from agentrm_jax.records import Step, Trajectory, format_step

TRAJ = Trajectory(task="maze", instruction="Reach the goal at (1, 0). You are at (0, 0).",
                  steps=(Step("East is open.", "move east", "You move east. You reach the goal."),
                         Step("", "look", "")))


# ------------------------------------------------------------------------------------------ parsing

@pytest.mark.parametrize("text, expected", [
    ("Thought: the goal is east.\nAction: move east", ("the goal is east.", "move east")),
    ("Thought: go\nAction: move east\nObservation: You move east.", ("go", "move east")),
    ("Action: move east", ("", "move east")),
    ("action: move east", ("", "move east")),
    ("ACTION:move east", ("", "move east")),
    ("Action :   move east   ", ("", "move east")),
    ("action：move east", ("", "move east")),
    ("**Thought:** east is open\n**Action:** move east", ("east is open", "move east")),
    ("Thought: x\n**Action**: move east", ("x", "move east")),
    ("Thought: x\nAction: `move east`", ("x", "move east")),
    ("Thought: x\nAction: \"open door\"", ("x", "open door")),
    ("Thought: x\nAction: move east.", ("x", "move east")),
    ("Thought: x\nAction: calculator(2.5)", ("x", "calculator(2.5)")),
    ("Thought: x\nAction: finish(3.5)", ("x", "finish(3.5)")),
    ("```\nThought: x\nAction: move east\n```", ("x", "move east")),
    ("Thought: x\nAction:\n```\nmove east\n```", ("x", "move east")),
    ("Thought: x\nAction:\nmove west\nmore", ("x", "move west")),
    ("Thought: first\nAction: move north\nThought: second\nAction: move south", ("first", "move north")),
    ("Thought: x\nAction: take key\nI hope this works. It should.", ("x", "take key")),
    ("Thought: x\nAction: take key Observation: You take the key.", ("x", "take key")),
    ("Thought: I will go east. Action: move east", ("I will go east.", "move east")),
    ("Thought 1: a\nAction 1: pick up b1", ("a", "pick up b1")),
    ("- Action: go forward", ("", "go forward")),
    ("Sure!\nThought: x\nAction: open fridge", ("Sure! x", "open fridge")),
    ("Thought: line one\nline two\nAction: go", ("line one line two", "go")),
    ("Thought: x\r\nAction: move east\r\n", ("x", "move east")),
    ("Thought: x\nAction: move east<|im_end|>", ("x", "move east")),
    ("move east", ("", "move east")),
    ("  `move east`  ", ("", "move east")),
    ("Thought: I am not sure what to do.", ("I am not sure what to do.", "")),
    ("I am thinking about it.\nStill thinking, the maze is big.",
     ("I am thinking about it. Still thinking, the maze is big.", "")),
    ("", ("", "")),
    ("   \n\n ", ("", "")),
    ("Action:", ("", "")),
    ("Thought: the action: is unclear", ("the action: is unclear", "")),
])
def test_parse_step_variants(text, expected):
    assert parse_step(text) == expected


def test_parse_step_never_raises_on_odd_input():
    for text in [None, "Action", ":", "```", "Action:\n```\n```", "Thought:\nAction:\n\n", "\x00\x01", "Action:" * 50,
                 "Thought: " + "x" * 5000, "\u2028Action: go\u2029", "<|im_start|>assistant"]:
        thought, action = parse_step(text)
        assert isinstance(thought, str) and isinstance(action, str)


def test_parse_roundtrips_format_step():
    for thought, action in [("go east", "move east"), ("", "pick up b1"), ("two words", "stack b1 on b2")]:
        assert parse_step(format_step(thought, action)) == (thought, action)


def test_cut_after_action_keeps_exactly_one_step():
    assert cut_after_action("Thought: a\nAction: go\nObservation: fake\nThought: b") == "Thought: a\nAction: go"
    assert cut_after_action("Thought: a\nAction: go\n\n") == "Thought: a\nAction: go"
    assert cut_after_action("Thought: a\nAction:\nmove east\nmore") == "Thought: a\nAction:\nmove east"
    assert cut_after_action("Thought: only thinking") == "Thought: only thinking"
    assert cut_after_action("") == ""


def test_action_line_complete_waits_for_the_newline():
    assert not action_line_complete("Thought: a\nAction: mo")  # the action may still be growing
    assert action_line_complete("Thought: a\nAction: move east\n")
    assert action_line_complete("Thought: a\nAction: move east\nObserv")
    assert not action_line_complete("Thought: a\nAction:\n")  # label only: wait for the action
    assert action_line_complete("Thought: a\nAction:\nmove east\n")
    assert not action_line_complete("Thought: a long thought\n")


# ------------------------------------------------------------------------------------------ messages

def _alternates(messages):
    roles = [m["role"] for m in messages]
    return roles[0] == "system" and all(r != roles[i + 1] for i, r in enumerate(roles[1:-1], 1))


def test_build_messages_structure():
    messages = build_messages(TRAJ)
    example = example_messages("maze")
    n_ex = len(example)
    assert messages[0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert "Thought:" in SYSTEM_PROMPT and "Action:" in SYSTEM_PROMPT
    assert messages[1:n_ex] == example[:-1]  # the worked example as earlier turns
    task = messages[n_ex]["content"]
    assert task.startswith(example[-1]["content"]) and task.endswith(
        task_message(TRAJ.instruction, after_example=True))
    assert [m["role"] for m in messages[n_ex:]] == ["user", "assistant", "user", "assistant", "user"]
    assert messages[n_ex + 1]["content"] == format_step("East is open.", "move east")
    assert messages[n_ex + 2]["content"] == "You move east. You reach the goal."
    assert messages[n_ex + 3]["content"] == format_step("", "look")
    assert messages[n_ex + 4]["content"]  # empty observation still gives a user turn
    assert _alternates(messages) and messages[-1]["role"] == "user"
    assert all(isinstance(m["content"], str) for m in messages)
    assert example_messages("maze") == example  # nothing shared was mutated


def test_build_messages_options():
    no_shot = build_messages(TRAJ, one_shot=False)
    assert [m["role"] for m in no_shot] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert no_shot[1]["content"] == task_message(TRAJ.instruction) and "xample" not in no_shot[1]["content"]
    folded = build_messages(TRAJ, system=False)
    assert folded[0]["role"] == "user" and folded[0]["content"].startswith(SYSTEM_PROMPT)
    assert len(folded) == len(build_messages(TRAJ)) - 1
    recent = build_messages(TRAJ, max_steps=1, one_shot=False)
    assert [m["role"] for m in recent] == ["system", "user", "assistant", "user"]
    assert recent[2]["content"] == format_step("", "look") and "1 earlier turns are omitted" in recent[1]["content"]
    assert len(build_messages(TRAJ, max_steps=0)) == len(build_messages(TRAJ.prefix(0)))
    empty = build_messages(Trajectory(task="maze", instruction="Go."), one_shot=False)
    assert [m["role"] for m in empty] == ["system", "user"]
    for name in ("maze", "pddl", "unknown", None):
        assert _alternates(build_messages(TRAJ, env_name=name))


def test_one_shot_examples_per_env_and_generic_fallback():
    for name in ("maze", "pddl", "babyai", "tool_query", "tool_operation", "textworld", "sciworld", "shop", "twx"):
        assert name in ONE_SHOT
        first_obs, steps = ONE_SHOT[name]
        text = one_shot_example(name)
        assert first_obs in text and all(format_step(t, a) in text for t, a, _ in steps)
        turns = example_messages(name)
        assert first_obs in turns[0]["content"] and len(turns) == 1 + 2 * len(steps)
        assert [m["content"] for m in turns[1::2]] == [format_step(t, a) for t, a, _ in steps]
    # members of a family, and envs standing for another's task, get that family's example
    for member, family in (("pddl_gripper", "pddl"), ("twx_cookingworld", "twx"), ("tools", "tool_query"),
                           ("webshop", "shop")):
        assert example_messages(member) == example_messages(family), member
    generic = one_shot_example("something_new")
    assert "Thought:" in generic and "Action:" in generic and generic != one_shot_example("maze")
    # the env name picks the example; default is the trajectory's task
    assert ONE_SHOT["pddl"][0] in build_messages(TRAJ, env_name="pddl")[1]["content"]
    assert ONE_SHOT["maze"][0] in build_messages(TRAJ)[1]["content"]


def test_tool_examples_use_their_envs_tools():
    # The example is the only place the model sees a tool called: it must call the env's real tools, listed
    # as the env lists them (an example once called calculator() and finish(), which no tool env has, and
    # the bundled model answered every tool task with finish(1)).
    from agentrm_jax.envs import make
    from agentrm_jax.envs.tools.calls import parse_call

    for name in ("tool_query", "tool_operation"):
        env = make(name, split="train")
        env.reset(0)
        first_obs, steps = ONE_SHOT[name]
        assert env._tool_list() in first_obs, name
        for _, action, _ in steps:
            assert parse_call(action)[0] in env.tools, (name, action)


def test_example_steps_parse_back():
    for name, (_, steps) in ONE_SHOT.items():
        for thought, action, _ in steps:
            assert parse_step(format_step(thought, action)) == (thought, action), name


def test_stop_strings_do_not_cut_the_action_line():
    text = "Thought: x\nAction: move east"
    assert not any(s in text for s in STOP_STRINGS)


def test_count_steps_skips_the_example_turns():
    for k in range(3):
        prefix = TRAJ.prefix(k)
        assert count_steps(build_messages(prefix)) == k
        assert count_steps(build_messages(prefix, one_shot=False)) == k
        assert count_steps(build_messages(prefix, system=False)) == k


def test_shorten_context_drops_old_steps_then_the_example():
    long = TRAJ.append(Step("t3", "a3", "o3"))
    messages = build_messages(long)
    seen = [messages]
    while (shorter := shorten_context(seen[-1])) is not None:
        seen.append(shorter)
    assert [count_steps(m) for m in seen] == [3, 2, 1, 1]
    last = seen[-1]
    assert [m["role"] for m in last] == ["system", "user", "assistant", "user"]
    assert long.instruction in last[1]["content"] and last[-1]["content"] == "o3"
    assert ONE_SHOT["maze"][0] not in last[1]["content"]
    assert messages == build_messages(long)  # the input is not modified
    assert shorten_context(build_messages(long.prefix(0), one_shot=False)) is None
    assert [count_steps(m) for m in (shorten_context(messages, steps=2), shorten_context(messages, steps=9))] == [1, 1]


def test_stable_drop_counts_cross_each_quantum_and_keep_the_latest_step():
    assert stable_drop_counts([4, 4, 4, 4, 4, 4], quantum=8) == [2, 4, 5]
    assert stable_drop_counts([3, 30, 2, 2, 2], quantum=8) == [2, 4]  # one big step crosses several blocks
    assert stable_drop_counts([5, 5, 5], quantum=1) == [1, 2]  # one step at a time
    assert stable_drop_counts([7], quantum=4) == [] and stable_drop_counts([], quantum=4) == []
    with pytest.raises(ValueError, match="quantum"):
        stable_drop_counts([1, 2], quantum=0)
    sizes = [5, 9, 2, 7, 7, 1, 8, 3, 6, 4]
    for n in range(2, len(sizes)):  # a longer history's counts begin with a shorter one's
        shorter, longer = stable_drop_counts(sizes[:n], 10), stable_drop_counts(sizes[:n + 1], 10)
        assert longer[:len(shorter) - 1] == shorter[:-1]


def _words(text: str) -> int:
    return len(text.split())


def _fit(messages, budget: int, quantum: int):
    size = sum(_words(m["content"]) for m in messages)
    if size <= budget:
        return messages
    return next(m for m in shortened_contexts(messages, _words, quantum) if sum(_words(x["content"]) for x in m) <= budget)


@pytest.mark.parametrize("quantum, most_cuts", [(1, None), (100, 8)])
def test_shortened_contexts_extend_the_last_turn_until_a_block_is_filled(quantum, most_cuts):
    """Turn after turn of a growing episode, the fitted context extends the previous one except at a
    few block boundaries; one step at a time (quantum=1) cuts anew on every turn past the budget."""
    traj = Trajectory(task="maze", instruction="Reach the goal. " * 10, steps=())
    previous, cuts, over = None, 0, 0
    for turn in range(40):
        traj = traj.append(Step(f"step {turn}", f"move east {turn}", "You move east. " * (3 + turn % 4)))
        messages = build_messages(traj)
        fitted = _fit(messages, budget=600, quantum=quantum)
        over += fitted is not messages
        assert fitted[-1] == messages[-1] and sum(_words(m["content"]) for m in fitted) <= 600
        if previous is not None and fitted[:len(previous)] != previous:
            cuts += 1
        previous = fitted
    assert over >= 20  # most turns needed a cut
    if most_cuts is None:
        assert cuts >= over - 1
    else:
        assert cuts <= most_cuts


def test_shortened_contexts_end_with_the_example_dropped():
    long = TRAJ.append(Step("t3", "a3", "o3"))
    tries = list(shortened_contexts(build_messages(long), _words, quantum=1000))
    assert [count_steps(m) for m in tries] == [1, 1]
    assert ONE_SHOT["maze"][0] in tries[0][1]["content"] and ONE_SHOT["maze"][0] not in tries[1][1]["content"]
    assert list(shortened_contexts(build_messages(long.prefix(0), one_shot=False), _words, 4)) == []
    # a context that ends with an assistant turn: that turn is the latest step, and the example goes last
    odd = build_messages(long) + [{"role": "assistant", "content": "Thought: x\nAction: a4"}]
    tries = list(shortened_contexts(odd, _words, quantum=1))
    assert [count_steps(m) for m in tries] == [3, 2, 1, 1] and tries[-1][-1] == odd[-1]
    assert ONE_SHOT["maze"][0] in tries[-2][1]["content"] and ONE_SHOT["maze"][0] not in tries[-1][1]["content"]
