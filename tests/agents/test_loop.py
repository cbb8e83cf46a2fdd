"""run_episode: prompt -> policy -> parse -> env.step on a tiny in-test env and on maze."""

from __future__ import annotations

import pytest

from agentrm_jax.agents.loop import run_episode, step_seed
from agentrm_jax.agents.policies import RandomPolicy, ScriptedPolicy, turn_of
from agentrm_jax.agents.prompts import SYSTEM_PROMPT
from agentrm_jax.records import Step, Trajectory
from agentrm_jax.envs.base import ReplayEnv, TextEnv


class CounterEnv(ReplayEnv):
    """Say "inc" until the counter reaches the target (seed % 3 + 2); anything else is "Nothing happens"."""

    name = "counter"

    def _reset(self, seed):
        self.target, self.count = seed % 3 + 2, 0
        self._instruction = f"Reach {self.target} by saying inc. Actions: inc, wait."
        return f"{self._instruction}\nThe counter is at 0."

    def _step(self, action):
        if action == "inc":
            self.count += 1
            return f"The counter is at {self.count}.", False
        if action == "explode":
            return "Boom. The episode is over.", True
        return f"Nothing happens: {action!r}. Actions: inc, wait.", False

    def _success(self):
        return self.count >= self.target

    def _progress(self):
        return min(1.0, self.count / self.target)

    def available_actions(self):
        return ["inc", "wait"]

    def expert_actions(self):
        return ["inc"] * self.target


class RecordingPolicy:
    """Returns canned texts per turn and records what it was asked."""

    def __init__(self, texts):
        self.texts, self.calls = texts, []

    def sample(self, contexts, n=1, temperature=0.0, seed=0):
        self.calls.append((contexts, n, temperature, seed))
        return [[self.texts[min(turn_of(c), len(self.texts) - 1)]] * n for c in contexts]


def test_counter_env_implements_the_protocol():
    assert isinstance(CounterEnv(), TextEnv)


def test_expert_episode_succeeds_and_records_everything():
    env = CounterEnv(split="test", max_turns=10)
    traj = run_episode(env, ScriptedPolicy.expert(env, thought="count up"), seed=4)
    assert isinstance(traj, Trajectory)
    assert traj.success is True and traj.progress == 1.0
    assert traj.task == "counter" and traj.id == "counter/test/4"
    assert traj.instruction == "Reach 3 by saying inc. Actions: inc, wait.\nThe counter is at 0."
    assert traj.steps == tuple(Step("count up", "inc", f"The counter is at {i}.") for i in (1, 2, 3))
    assert traj.meta["turns"] == 3 and traj.meta["split"] == "test" and len(traj.meta["raw"]) == 3
    with pytest.raises(Exception):
        traj.steps = ()  # immutable
    assert Trajectory.from_dict(traj.to_dict()) == traj


def test_prompts_grow_with_the_trajectory_and_seeds_vary_by_turn():
    env = CounterEnv()
    policy = RecordingPolicy(["Thought: up\nAction: inc"])
    traj = run_episode(env, policy, seed=0, temperature=0.5, env_name="maze", one_shot=False)
    assert len(traj) == 2 and traj.success
    (first, n, temp, seed0), (second, _, _, seed1) = policy.calls
    assert n == 1 and temp == 0.5 and (seed0, seed1) == (step_seed(0, 0), step_seed(0, 1)) and seed0 != seed1
    ctx0, ctx1 = first[0], second[0]
    assert ctx0[0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert traj.instruction in ctx0[1]["content"] and "example" not in ctx0[1]["content"].lower()
    assert ctx1[:2] == ctx0[:2]
    assert ctx1[2:] == [{"role": "assistant", "content": "Thought: up\nAction: inc"},
                        {"role": "user", "content": "The counter is at 1."}]


@pytest.mark.parametrize("texts", [
    [""], ["garbage\nwith lines\n" * 20], ["Action:"], ["```"], ["Thought: hmm"], ["\x00\x7f"],
])
def test_model_text_never_crashes_the_loop(texts):
    env = CounterEnv(max_turns=4)
    traj = run_episode(env, RecordingPolicy(texts), seed=1)
    assert len(traj) == 4 and traj.success is False and traj.progress == 0.0
    assert all(s.observation.startswith("Nothing happens") for s in traj.steps)


def test_policy_returning_nothing_or_non_strings_is_tolerated():
    class Broken:
        def sample(self, contexts, n=1, temperature=0.0, seed=0):
            return [[None]] if seed % 2 else [[]]

    traj = run_episode(CounterEnv(max_turns=3), Broken(), seed=0)
    assert len(traj) == 3 and all(s.action == "" for s in traj.steps)


def test_max_turns_and_terminal_failure():
    traj = run_episode(CounterEnv(max_turns=30), RecordingPolicy(["Action: wait"]), seed=0, max_turns=5)
    assert len(traj) == 5 and not traj.success
    traj = run_episode(CounterEnv(max_turns=3), RecordingPolicy(["Action: wait"]), seed=0, max_turns=10)
    assert len(traj) == 3  # the env's own limit is lower
    traj = run_episode(CounterEnv(), RecordingPolicy(["Action: inc", "Action: explode"]), seed=0)
    assert len(traj) == 2 and traj.steps[-1].observation.startswith("Boom") and traj.progress == 0.5
    with pytest.raises(ValueError, match="max_turns"):
        run_episode(CounterEnv(), RecordingPolicy(["x"]), max_turns=0)


def test_random_episodes_are_deterministic():
    env = CounterEnv(max_turns=8)
    a = run_episode(env, RandomPolicy.for_env(env, seed=3), seed=2)
    b = run_episode(env, RandomPolicy.for_env(env, seed=3), seed=2)
    assert a == b and a.meta == b.meta
    actions = {s.action for seed in range(5) for s in run_episode(env, RandomPolicy.for_env(env, seed=seed)).steps}
    assert actions == {"inc", "wait"}


def test_callbacks_see_the_first_observation_and_every_step():
    seen = []
    traj = run_episode(CounterEnv(), ScriptedPolicy(["inc"] * 5), seed=0,
                       on_reset=lambda obs: seen.append(("reset", obs)),
                       on_step=lambda turn, step, raw: seen.append((turn, step.action, raw)))
    assert seen[0] == ("reset", traj.instruction)
    assert seen[1:] == [(0, "inc", "Action: inc"), (1, "inc", "Action: inc")]


def test_maze_expert_succeeds():
    import agentrm_jax.envs.maze as maze
    from agentrm_jax.envs import make

    for split, seed in [("train", 0), ("train", 3), ("test", 7)]:
        env = make("maze", seed=seed, split=split)
        traj = run_episode(env, ScriptedPolicy.expert(env), seed=seed)
        assert traj.success and traj.progress == 1.0, (split, seed)
        assert traj.id == f"maze/{split}/{seed}" and len(traj) == len(env.expert_actions())
        assert isinstance(env, maze.MazeEnv)


def test_maze_random_is_reproducible_and_bounded():
    import agentrm_jax.envs.maze  # noqa: F401  (registers maze)
    from agentrm_jax.envs import make

    env = make("maze", seed=1)
    a = run_episode(env, RandomPolicy.for_env(env, seed=0), seed=1, max_turns=12)
    b = run_episode(env, RandomPolicy.for_env(env, seed=0), seed=1, max_turns=12)
    assert a == b and len(a) <= 12 and 0.0 <= a.progress <= 1.0
