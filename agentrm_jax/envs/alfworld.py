"""`alfworld`: an adapter that plays the official ALFWorld text games (TextWorld PDDL format) when they are present.

What it needs (neither is installable offline, so nothing here is bundled):

1. the data: `pip install alfworld && alfworld-download` (it downloads to
   `~/.cache/alfworld`), then point `ALFWORLD_DATA` (or the `data_dir=`
   kwarg) at the folder that contains `json_2.1.1/`. Games are the
   `json_2.1.1/<split>/<task>/<trial>/game.tw-pddl` files: split "train" uses
   `train/`, split "test" uses `valid_unseen/` (or `valid_seen/` with
   `test_folder="valid_seen"`);
2. TextWorld's PDDL engine: `pip install "textworld[pddl]"` (it builds the
   fast-downward-textworld package from source, a few minutes).

Without the data the env raises FileNotFoundError naming the download and
the folder layout; without the engine, ImportError naming the pip command.

How it plays: each game file is loaded into `textworld.envs.PddlEnv`;
object ids such as `Apple_bar__minus_00_dot_47_...` are renamed "apple 1",
"apple 2", ... per type (what ALFWorld's own demangler does; our
re-implementation, so numbering may differ from the alfworld package's).
Task `seed` is game `seed % n` of the split's sorted game list (games marked
unsolvable are skipped). Observation: the game's intro ("You are in the
middle of a room ... Your task is to: ...") and then the engine's feedback.
Actions: the engine's admissible commands (`go to cabinet 1`, `take apple 1
from countertop 2`, `put apple 1 in/on fridge 1`, `clean apple 1 with
sinkbasin 1`, ...), case-insensitive; anything else gets "Nothing happens.
Valid actions: ..." and counts as a turn. Expert: the game file's
walkthrough when it has one, else the engine's planner (`replan`).
Progress: 1.0 when the task is done, else 0.0 -- the official data has no
subgoal annotations (AgentBoard's ALFWorld progress uses its own annotations,
which are not part of the official release). snapshot/restore: replay.

Limitation, stated plainly: this adapter was only exercised on its error
paths and on the name demangling here; it has not been run against the real
ALFWorld data (not available offline in development), so treat it as
untested until `tests/envs/test_adapters.py` is run with ALFWORLD_DATA set.
"""

from __future__ import annotations

import json
import os
import re
from collections import defaultdict
from pathlib import Path

from agentrm_jax.envs.base import EnvSpec, ReplayEnv, register

__all__ = ["AlfWorldEnv", "demangle", "find_games"]

MISSING = (
    "alfworld: the ALFWorld game files were not found. Install the downloader and fetch the data: "
    "`pip install alfworld && alfworld-download` (it writes ~/.cache/alfworld), then set "
    "ALFWORLD_DATA=~/.cache/alfworld (the folder that contains json_2.1.1/) or pass data_dir=... . "
    "Expected files: json_2.1.1/{{train,valid_seen,valid_unseen}}/<task>/<trial>/game.tw-pddl. Looked in: {where}"
)
ENGINE_HINT = ("alfworld: playing ALFWorld games needs TextWorld's PDDL engine (fast_downward): "
               "pip install \"textworld[pddl]\"")


def find_games(split: str, data_dir: str | os.PathLike | None = None, test_folder: str = "valid_unseen") -> list[Path]:
    """The sorted game.tw-pddl files of `split` (FileNotFoundError with download instructions if there are none)."""
    folder = data_dir or os.environ.get("ALFWORLD_DATA")
    if not folder:
        raise FileNotFoundError(MISSING.format(where="(no data_dir and ALFWORLD_DATA is unset)"))
    root = Path(folder).expanduser()
    base = root / "json_2.1.1" if (root / "json_2.1.1").is_dir() else root
    sub = base / ("train" if split == "train" else test_folder)
    games = sorted(sub.glob("**/game.tw-pddl")) if sub.is_dir() else []
    if not games:
        raise FileNotFoundError(MISSING.format(where=f"{sub} (no game.tw-pddl files)"))
    return games


def demangle(ids: list[str]) -> dict[str, str]:
    """Readable names for ALFWorld object ids: 'Apple_bar__minus_00_dot_47_...' -> 'apple 1' (numbered per type).

    Ids without the `_bar_` position suffix (rooms, the agent, plain names) keep
    their id, lower-cased.
    """
    by_type: dict[str, list[str]] = defaultdict(list)
    names = {}
    for ident in sorted(ids):
        if "_bar_" not in ident:
            names[ident] = ident.lower()
            continue
        kind = ident.split("_bar_", 1)[0].lower()
        by_type[kind].append(ident)
    for kind, members in by_type.items():
        for i, ident in enumerate(members, 1):
            names[ident] = f"{kind} {i}"
    return names


class AlfWorldEnv(ReplayEnv):
    """The official ALFWorld games through TextWorld's PDDL engine (see the module docstring)."""

    name = "alfworld"

    def __init__(self, *, split: str = "train", max_turns: int = 50, data_dir: str | os.PathLike | None = None,
                 test_folder: str = "valid_unseen"):
        super().__init__(split=split, max_turns=max_turns)
        self.games = find_games(split, data_dir, test_folder)
        try:
            from textworld.envs.pddl.pddl import fast_downward_missing
        except ImportError as err:  # pragma: no cover - textworld is a dependency of the game envs
            raise ImportError(ENGINE_HINT) from err
        if fast_downward_missing:
            raise ImportError(ENGINE_HINT)
        self._tw = None
        self._state = None
        self._walkthrough: list[str] = []
        self.game_file: Path | None = None

    def _load(self, path: Path) -> None:
        import textworld
        from textworld.envs.pddl import PddlEnv

        infos = textworld.EnvInfos(admissible_commands=True, won=True, lost=True, extras=["walkthrough"])
        env = PddlEnv(infos)
        env.load(str(path))
        for ident, name in demangle(list(env._entity_infos)).items():
            env._entity_infos[ident].name = name
        self._tw, self.game_file = env, path

    def _reset(self, seed: int) -> str:
        n = len(self.games)
        for offset in range(n):
            path = self.games[(seed + offset) % n]
            try:
                if json.loads(path.read_text()).get("solvable", True):
                    break
            except (OSError, ValueError):
                continue
        if self.game_file != path or self._tw is None:
            self._load(path)
        self._state = self._tw.reset()
        self._walkthrough = [str(c) for c in (self._state.get("extra.walkthrough") or [])]
        feedback = str(self._state.feedback).strip()
        task = re.search(r"Your task is to:?\s*(.+)", feedback)
        self._instruction = ("Your task is to: " + task.group(1).strip()) if task else feedback
        return feedback

    def _step(self, action: str) -> tuple[str, bool]:
        admissible = {c.lower(): c for c in self._state["admissible_commands"]}
        command = admissible.get(" ".join(action.lower().split()).rstrip("."))
        if command is None:
            return (f"Nothing happens: {action!r} is not a valid action here. "
                    f"Valid actions: {', '.join(self._state['admissible_commands'])}."), False
        self._state, _, _ = self._tw.step(command)
        return str(self._state.feedback).strip(), bool(self._state["won"] or self._state["lost"])

    def _success(self) -> bool:
        return self._state is not None and bool(self._state["won"])

    def _progress(self) -> float:
        return 1.0 if self._success() else 0.0

    def available_actions(self) -> list[str] | None:
        """The engine's admissible commands in the current state."""
        return None if self._state is None else list(self._state["admissible_commands"])

    def expert_actions(self) -> list[str]:
        """The game file's walkthrough, or the engine planner's plan when the file has none."""
        if self._state is None:
            raise RuntimeError("alfworld: call reset(seed) before expert_actions()")
        return list(self._walkthrough)


register(EnvSpec(
    name="alfworld", factory=AlfWorldEnv, env_type="embodied", role="held_in", stands_for="AgentRM ALFWorld",
    source="official ALFWorld game files via textworld 1.7.0's PDDL engine (needs textworld[pddl] + data)",
    description="Adapter for the official ALFWorld games (ALFWORLD_DATA or data_dir=); admissible commands; "
                "progress = 1.0 on success else 0.0 (no subgoal annotations in the official data).",
))
