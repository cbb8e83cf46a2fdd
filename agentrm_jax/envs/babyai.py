"""`babyai`: minigrid's BabyAI levels rendered to text, standing in for AgentBoard's BabyAI.

A task is one BabyAI level instance: the level is chosen from `LEVELS` by the
task seed (or fixed with the `level=` kwarg) and the minigrid environment is
reset with a seed derived from `task_seed`, so the same (split, seed) always
gives the same grid and mission and train/test never share one. Instances the
bot cannot solve within MAX_EXPERT_STEPS (24) actions are skipped (the next
candidate from the same seeded stream is used), so every task fits the default
30 turns. minigrid and
gymnasium are imported lazily (inside methods), never at module import.

Observation (what the agent's 7x7 egocentric view shows, occlusion included):

    You see a red ball 2 steps ahead and 1 step to your left; a closed grey door 3 steps ahead.
    In front of you: open floor, then a wall 3 steps ahead. There is a wall immediately to your right.
    You are not carrying anything.

Actions (case-insensitive, trailing punctuation ignored): `turn left`, `turn
right`, `move forward`, `pick up`, `drop`, `toggle` (open/close the door or
open the box in front of you), and `done` (do nothing; BabyAI's "done"
action). Short forms such as `left`, `forward`, `go forward`, `pickup`,
`pick up the ball` and `open door` are accepted; object words after `pick up`,
`drop` and `toggle`/`open` are ignored (the action always applies to the cell
in front of the agent).

Expert: minigrid's `BabyAIBot` run on a separate copy of the same level
instance from reset (its actions are verified to win; cached per instance). Progress (AgentBoard-style
subgoals, in [0, 1], 1.0 exactly on success, maximum over the episode):

- GoTo / Open / Pickup missions: `0.9 * approach`, where `approach = 1 -
  d / d0` is the fraction of the Manhattan distance (to the cell next to the
  nearest object matching the mission) closed since reset (0 if d0 = 0);
- PutNext missions: `0.4 * approach(object to move)` until the agent carries
  that object, then `0.5 + 0.4 * approach(fixed object)` (distance measured
  from the moment of pickup);
- success gives 1.0 (for Unlock levels fetching the key is not a separate
  subgoal: only the approach to the door counts). A mission failure (e.g. opening the wrong door in strict
  levels) ends the episode.
"""

from __future__ import annotations

import contextlib
import functools
import io
import random
import re
from typing import Any

from agentrm_jax.envs.base import EnvSpec, ReplayEnv, register, task_seed

__all__ = ["ACTIONS", "LEVELS", "MAX_EXPERT_STEPS", "BabyAIEnv", "parse_action"]

# Levels whose missions can be solved from text within ~25 primitive actions by the bot.
LEVELS = (
    "BabyAI-GoToRedBallGrey-v0",
    "BabyAI-GoToObj-v0",
    "BabyAI-GoToLocal-v0",
    "BabyAI-PickupLoc-v0",
    "BabyAI-PickupDist-v0",
    "BabyAI-OpenDoor-v0",
    "BabyAI-OpenDoorLoc-v0",
    "BabyAI-PutNextLocal-v0",
    "BabyAI-UnlockLocal-v0",
)

# word form -> minigrid action index (MiniGridEnv.Actions: left, right, forward, pickup, drop, toggle, done)
ACTIONS = {"turn left": 0, "turn right": 1, "move forward": 2, "pick up": 3, "drop": 4, "toggle": 5, "done": 6}
_NAMES = {v: k for k, v in ACTIONS.items()}
_EXACT = {
    "left": 0, "turn left": 0, "rotate left": 0, "turn to the left": 0,
    "right": 1, "turn right": 1, "rotate right": 1, "turn to the right": 1,
    "forward": 2, "move forward": 2, "go forward": 2, "move ahead": 2, "go ahead": 2, "go straight": 2,
    "step forward": 2, "walk forward": 2, "move forwards": 2,
    "done": 6, "stop": 6, "wait": 6,
}
_PREFIXES = (("pick up", 3), ("pickup", 3), ("pick", 3), ("grab", 3), ("take", 3), ("drop", 4), ("put down", 4),
             ("toggle", 5), ("open", 5))
_MAX_BOT_STEPS = 200
MAX_EXPERT_STEPS = 24  # level instances whose bot solution is longer are skipped (fits the default max_turns)
_SILENCE = contextlib.redirect_stdout  # minigrid prints "Sampling rejected ..." while generating levels


def parse_action(action: str) -> int | None:
    """The minigrid action index an action string names, or None if it names none."""
    text = " ".join(re.split(r"[^a-z]+", action.lower())).strip()
    if text in _EXACT:
        return _EXACT[text]
    for prefix, index in _PREFIXES:
        if text == prefix or text.startswith(prefix + " "):
            return index
    return None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _describe_object(obj) -> str:
    if obj.type == "door":
        state = "locked" if obj.is_locked else ("open" if obj.is_open else "closed")
        return f"a {state} {obj.color} door"
    return f"a {obj.color} {obj.type}"


def _where(forward: int, right: int) -> str:
    parts = []
    if forward:
        parts.append(f"{_plural(forward, 'step')} ahead")
    if right:
        parts.append(f"{_plural(abs(right), 'step')} to your {'right' if right > 0 else 'left'}")
    return " and ".join(parts) if parts else "right here"


def _make_level(level: str):
    """A bare (unwrapped) minigrid environment for a BabyAI level id."""
    import gymnasium as gym
    import minigrid  # noqa: F401  (registers the BabyAI-* ids with gymnasium)

    return gym.make(level).unwrapped


_BOT_ENVS: dict[str, Any] = {}  # one private env per level that the bot plays on


@functools.lru_cache(maxsize=4096)
def _solve(level: str, instance_seed: int) -> tuple[str, ...] | None:
    """BabyAIBot's winning action words for a level instance (cached), or None if it does not win."""
    from minigrid.utils.baby_ai_bot import BabyAIBot

    if level not in _BOT_ENVS:
        _BOT_ENVS[level] = _make_level(level)
    env = _BOT_ENVS[level]
    with _SILENCE(io.StringIO()):
        env.reset(seed=instance_seed)
    bot, actions = BabyAIBot(env), []
    try:
        for _ in range(_MAX_BOT_STEPS):
            index = int(bot.replan())
            _, reward, terminated, truncated, _ = env.step(index)
            actions.append(_NAMES[index])
            if terminated or truncated:
                return tuple(actions) if terminated and reward > 0 else None
    except Exception:  # the bot gives up on rare layouts: treat as unsolved (the task is resampled)
        return None
    return None


class BabyAIEnv(ReplayEnv):
    """BabyAI level instances as a text env (see the module docstring). Snapshot/restore replays from reset."""

    name = "babyai"

    def __init__(self, *, split: str = "train", max_turns: int = 30, level: str | None = None):
        super().__init__(split=split, max_turns=max_turns)
        if level is not None and not level.startswith("BabyAI-"):
            level = f"BabyAI-{level}"
        if level is not None and level.count("-v") == 0:
            level = f"{level}-v0"
        self.level = level
        self._envs: dict[str, Any] = {}  # one minigrid env per level, reused across resets
        self.env = None
        self._current_level = ""
        self._instance_seed = 0
        self._won = False
        self._failed = False
        self._stage = 0  # PutNext: 0 = fetching the object to move, 1 = carrying it
        self._d0 = 0

    # -- level instances ----------------------------------------------------------------------------
    def _choose(self, seed: int) -> tuple[str, int]:
        """The task's (level, minigrid seed): the first candidate the bot solves within MAX_EXPERT_STEPS."""
        if self.level is not None:
            rng = random.Random(task_seed(f"{self.name}/{self.level}", self.split, seed))
        else:
            rng = random.Random(task_seed(self.name, self.split, seed))
        while True:
            level = self.level or rng.choice(LEVELS)
            instance_seed = rng.getrandbits(62)
            expert = _solve(level, instance_seed)
            if expert is not None and len(expert) <= MAX_EXPERT_STEPS:
                return level, instance_seed

    # -- mission structure ----------------------------------------------------------------------------
    def _kind(self) -> str:
        return type(self.env.instrs).__name__  # GoToInstr, OpenInstr, PickupInstr, PutNextInstr

    def _distance(self, desc) -> int:
        """Manhattan distance from the agent to the cell next to the nearest object matching `desc`."""
        ax, ay = (int(v) for v in self.env.agent_pos)
        best = None
        for obj in desc.obj_set:
            pos = obj.cur_pos
            if pos is None or int(pos[0]) < 0:  # carried
                continue
            d = max(abs(int(pos[0]) - ax) + abs(int(pos[1]) - ay) - 1, 0)
            best = d if best is None else min(best, d)
        return 0 if best is None else best

    def _target_desc(self):
        instrs = self.env.instrs
        if self._kind() == "PutNextInstr":
            return instrs.desc_fixed if self._stage else instrs.desc_move
        return instrs.desc

    def _carrying_move_object(self) -> bool:
        carrying = self.env.carrying
        return carrying is not None and any(carrying is obj for obj in self.env.instrs.desc_move.obj_set)

    # -- rendering ----------------------------------------------------------------------------------
    def _describe(self) -> str:
        grid, vis = self.env.gen_obs_grid()
        w, h = grid.width, grid.height
        cx, cy = w // 2, h - 1
        seen = []
        for j in range(h - 1, -1, -1):
            for i in range(w):
                if (i, j) == (cx, cy) or not vis[i, j]:
                    continue
                obj = grid.get(i, j)
                if obj is None or obj.type in ("wall", "floor"):
                    continue
                seen.append((cy - j + abs(i - cx), f"{_describe_object(obj)} {_where(cy - j, i - cx)}"))
        seen.sort(key=lambda t: t[0])
        lines = ["You see " + "; ".join(s for _, s in seen) + "." if seen else "You see no objects."]
        ahead = None
        for j in range(cy - 1, -1, -1):
            if not vis[cx, j]:
                break
            obj = grid.get(cx, j)
            if obj is not None:
                ahead = (cy - j, obj)
                break
        if ahead is None:
            lines.append("In front of you the way is clear as far as you can see.")
        elif ahead[0] == 1:
            what = "a wall" if ahead[1].type == "wall" else _describe_object(ahead[1])
            lines.append(f"Directly in front of you is {what}.")
        else:
            what = "a wall" if ahead[1].type == "wall" else _describe_object(ahead[1])
            lines.append(f"In front of you: open floor, then {what} {_plural(ahead[0], 'step')} ahead.")
        for side, i in (("left", cx - 1), ("right", cx + 1)):
            obj = grid.get(i, cy)
            if obj is not None and obj.type == "wall":
                lines.append(f"There is a wall immediately to your {side}.")
        carrying = self.env.carrying
        lines.append(f"You are carrying {_describe_object(carrying)}." if carrying else
                     "You are not carrying anything.")
        return " ".join(lines)

    # -- ReplayEnv hooks ----------------------------------------------------------------------------
    def _reset(self, seed: int) -> str:
        level, instance_seed = self._choose(seed)
        if level not in self._envs:
            self._envs[level] = _make_level(level)
        self.env = self._envs[level]
        self._current_level, self._instance_seed = level, instance_seed
        with _SILENCE(io.StringIO()):
            self.env.reset(seed=instance_seed)
        self._won = self._failed = False
        self._stage = 0
        self._d0 = self._distance(self._target_desc())
        self._instruction = (
            f"You are an agent in a BabyAI grid world. Your mission: {self.env.mission}. "
            "You see only a 7x7 area in front of you and cannot see through walls or closed doors. "
            "Actions: turn left, turn right, move forward, pick up (the object in front of you), "
            "drop (what you carry, in front of you), toggle (open or close the door / open the box in front of you), "
            "done (do nothing)."
        )
        return f"{self._instruction}\n{self._describe()}"

    def _step(self, action: str) -> tuple[str, bool]:
        index = parse_action(action)
        if index is None:
            return (f"Nothing happens: {action!r} is not a valid action. Valid actions: {', '.join(ACTIONS)}. "
                    f"{self._describe()}"), False
        env = self.env
        before_pos, before_carry = tuple(int(v) for v in env.agent_pos), env.carrying
        front = env.grid.get(*env.front_pos)
        _, reward, terminated, _, _ = env.step(index)
        if self._kind() == "PutNextInstr" and self._stage == 0 and self._carrying_move_object():
            self._stage = 1
            self._d0 = self._distance(self._target_desc())
        if terminated:
            self._won, self._failed = reward > 0, reward <= 0
        result = self._result_text(index, before_pos, before_carry, front)
        if self._won:
            return f"{result} Mission complete: {env.mission}.", True
        if self._failed:
            return f"{result} The mission has failed.", True
        return f"{result} {self._describe()}", False

    def _result_text(self, index: int, before_pos, before_carry, front) -> str:
        env = self.env
        name = _NAMES[index]
        if index == 2:
            if tuple(int(v) for v in env.agent_pos) == before_pos:
                blocker = "a wall" if front is None or front.type == "wall" else _describe_object(front)
                return f"You cannot move forward: {blocker} is in the way."
            return "You move forward."
        if index in (0, 1):
            return f"You {name}."
        if index == 3:
            if env.carrying is not None and before_carry is None:
                return f"You pick up {_describe_object(env.carrying)}."
            return "Nothing happens: there is nothing you can pick up in front of you." if before_carry is None \
                else "Nothing happens: your hands are full."
        if index == 4:
            if before_carry is not None and env.carrying is None:
                return f"You drop {_describe_object(before_carry)}."
            return "Nothing happens: you cannot drop anything here." if before_carry is not None \
                else "Nothing happens: you are not carrying anything."
        if index == 5:
            if front is None or front.type not in ("door", "box"):
                return "Nothing happens: there is nothing to toggle in front of you."
            if front.type == "box":
                return "You open the box." if env.grid.get(*env.front_pos) is not front else "Nothing happens."
            if front.is_locked:
                return "Nothing happens: the door is locked and you have no matching key."
            return f"You {'open' if front.is_open else 'close'} the {front.color} door."
        return "You wait."

    def _success(self) -> bool:
        return self._won

    def _progress(self) -> float:
        if self._won:
            return 1.0
        d = self._distance(self._target_desc())
        approach = 0.0 if self._d0 == 0 else min(max(1.0 - d / self._d0, 0.0), 1.0)
        if self._kind() == "PutNextInstr":
            return 0.5 + 0.4 * approach if self._stage else 0.4 * approach
        return 0.9 * approach

    def available_actions(self) -> list[str]:
        """The seven primitive actions (always valid to send; some may do nothing)."""
        return list(ACTIONS)

    def expert_actions(self) -> list[str]:
        """BabyAIBot's action sequence on a fresh copy of this task's level instance (verified to win)."""
        if self.env is None:
            raise RuntimeError("babyai: call reset(seed) before expert_actions()")
        return list(_solve(self._current_level, self._instance_seed))

register(EnvSpec(
    name="babyai", factory=BabyAIEnv, env_type="embodied", role="held_out", stands_for="AgentBoard BabyAI",
    source="minigrid 3.2.0 BabyAI levels",
    description="BabyAI GoTo/Pickup/Open/PutNext/Unlock levels rendered as egocentric text; primitive actions as "
                "words; expert = minigrid BabyAIBot; progress = distance-closing subgoals, 1.0 on success.",
))
