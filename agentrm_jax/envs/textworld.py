"""`textworld`: small interactive-fiction games generated offline with TextWorld, standing in for AgentBoard Jericho.

Jericho's game files (Zork and friends) are not redistributable, so the
held-out "game" task is played on text adventures that TextWorld 1.7.0
generates from a seed: a house of 2-4 rooms with 3-6 objects and one or two
parallel quests (quest length 2-4 actions in all for one quest, 2 each for
two), e.g. "go east, take the key, unlock the chest with the key". The game
parameters and the generator seed come from `task_seed("textworld", split,
seed)`, so the same (split, seed) always gives the same game and train/test
never share one.

Games are generated once and cached under `$AGENTRM_CACHE/textworld/` (or
`~/.cache/agentrm_jax/textworld/`, or the `cache_dir=` kwarg), one folder per
(split, seed, generator settings). Generation (about 1-2 s per game after a
one-off ~3 s start-up of TextWorld's knowledge base, plus Inform 7
compilation) writes into a temporary folder next to the cache and renames it
into place, so concurrent workers never see half-written games. TextWorld is
imported lazily, never at module import.

Observation: the first one is the quest objective (the instruction) followed
by the starting room's description; later ones are the game's text for the
last command, with the banner, the prompt and the status line removed.
Actions: TextWorld's admissible commands (`available_actions()`), e.g. `go
east`, `take key`, `open chest`, `insert butterfly into refrigerator`,
`look`, `inventory`, `examine key`; matching is case-insensitive and ignores
extra spaces and trailing punctuation, and bare directions (`east`, `e`) mean
`go east`. A command outside the admissible set is never sent to the game
engine (so meta-commands such as "quit" or "restart" cannot break it): it is
answered with "Nothing happens ... Valid actions: ..." and counts as a turn.

Expert: the game's walkthrough (the generator's winning policy). Success: the
game is won (all quests done). Progress: `max(score / max_score, walkthrough
fraction)`, where the walkthrough fraction is `1 - len(policy now) /
len(policy at reset)` from TextWorld's `policy_commands` (the remaining
winning commands from the current state), kept below 1 until the game is
won; the base class keeps the maximum over the episode. A lost game (a quest
failure event) ends the episode. snapshot/restore replay the actions from
reset (the engine is deterministic).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import re
import shutil
import tempfile
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

from agentrm_jax.envs.base import EnvSpec, ReplayEnv, register, task_seed

__all__ = ["GameSettings", "TextWorldEnv", "cache_root", "game_file", "game_settings"]

_DIRECTIONS = {"n": "north", "s": "south", "e": "east", "w": "west", "north": "north", "south": "south",
               "east": "east", "west": "west"}
_BANNER_END = re.compile(r"\$\$\s*\n\s*\n", re.M)


@dataclass(frozen=True)
class GameSettings:
    """TextWorld generator settings for one game (all derived from the task seed)."""

    seed: int
    nb_rooms: int
    nb_objects: int
    quest_length: int
    nb_parallel_quests: int

    @property
    def key(self) -> str:
        """A folder name that identifies the game in the cache."""
        return (f"s{self.seed}-r{self.nb_rooms}-o{self.nb_objects}-q{self.quest_length}"
                f"-p{self.nb_parallel_quests}")


def game_settings(split: str, seed: int) -> GameSettings:
    """The generator settings of task `seed` of `split`."""
    rng = random.Random(task_seed("textworld", split, seed))
    parallel = rng.choice((1, 1, 2))
    length = rng.randint(2, 4) if parallel == 1 else 2
    return GameSettings(seed=rng.randrange(2**31 - 1), nb_rooms=rng.randint(2, 4), nb_objects=rng.randint(3, 6),
                        quest_length=length, nb_parallel_quests=parallel)


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where games are cached: `cache_dir`, else $AGENTRM_CACHE/textworld, else ~/.cache/agentrm_jax/textworld."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("AGENTRM_CACHE"):
        return Path(os.environ["AGENTRM_CACHE"]) / "textworld"
    return Path.home() / ".cache" / "agentrm_jax" / "textworld"


def game_file(split: str, seed: int, cache_dir: str | os.PathLike | None = None) -> Path:
    """The compiled game (.z8) of task `seed` of `split`, generating it into the cache if needed."""
    settings = game_settings(split, seed)
    root = cache_root(cache_dir)
    final = root / f"{split}-{seed}-{settings.key}"
    path = final / "game.z8"
    if path.exists() and (final / "game.json").exists():
        return path
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=root))
    try:
        _generate(settings, tmp / "game.z8")
        (tmp / "settings.json").write_text(json.dumps({"split": split, "seed": seed, **asdict(settings)}))
        try:
            os.rename(tmp, final)
        except OSError:  # another process generated it first
            if not path.exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _generate(settings: GameSettings, path: Path) -> None:
    import textworld
    from textworld.generator import compile_game, make_game

    options = textworld.GameOptions()
    options.seeds = settings.seed
    options.nb_rooms = settings.nb_rooms
    options.nb_objects = settings.nb_objects
    options.quest_length = settings.quest_length
    options.nb_parallel_quests = settings.nb_parallel_quests
    options.path = str(path)
    options.force_recompile = True
    with contextlib.redirect_stdout(io.StringIO()):
        game = make_game(options)
        compile_game(game, options)


def _clean(text: str) -> str:
    """Game output without the ASCII-art banner, the '>' prompt, the status line and the restart question."""
    text = text or ""
    banner = list(_BANNER_END.finditer(text))
    if banner and "$$$$" in text:
        text = text[banner[-1].end():]
    text = re.sub(r"\n>[^\n]*$", "", text.rstrip())
    text = re.sub(r"\s*-= [^=\n]+ =-\d+/\d+\s*$", "", text)
    lines = [ln.rstrip() for ln in text.splitlines()
             if "Would you like to RESTART" not in ln and ln.strip() != ">"]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _normalise(command: str) -> str:
    words = re.sub(r"[.!?;:,\"']+$", "", command.strip().lower()).split()
    if len(words) == 1 and words[0] in _DIRECTIONS:
        words = ["go", _DIRECTIONS[words[0]]]
    if len(words) == 2 and words[0] in ("go", "move", "walk", "head") and words[1] in _DIRECTIONS:
        words = ["go", _DIRECTIONS[words[1]]]
    return " ".join(words)


class TextWorldEnv(ReplayEnv):
    """A generated TextWorld text adventure (see the module docstring)."""

    name = "textworld"

    def __init__(self, *, split: str = "train", max_turns: int = 30, cache_dir: str | os.PathLike | None = None):
        super().__init__(split=split, max_turns=max_turns)
        self.cache_dir = cache_dir
        self._game: Path | None = None
        self._tw = None
        self._state = None
        self._walkthrough: list[str] = []
        self._initial_policy = 1

    # -- engine -----------------------------------------------------------------------------------
    def _open(self, path: Path) -> None:
        import textworld

        if self._game == path and self._tw is not None:
            return
        self.close()
        infos = textworld.EnvInfos(admissible_commands=True, policy_commands=True, score=True, max_score=True,
                                   won=True, lost=True, objective=True, description=True, extras=["walkthrough"])
        self._tw = textworld.start(str(path), request_infos=infos)
        self._game = path

    def close(self) -> None:
        """Release the game engine (a later reset reopens it)."""
        if self._tw is not None:
            with contextlib.suppress(Exception):
                self._tw.close()
        self._tw, self._game = None, None

    def __del__(self):
        self.close()

    # -- ReplayEnv hooks --------------------------------------------------------------------------
    def _reset(self, seed: int) -> str:
        path = game_file(self.split, seed, self.cache_dir)
        with warnings.catch_warnings():  # jericho: "not fully supported" (TextWorld tracks the score itself)
            warnings.filterwarnings("ignore", message=".*is not fully supported.*")
            self._open(path)
            self._state = self._tw.reset()
        self._walkthrough = list(self._state["extra.walkthrough"] or self._state["policy_commands"])
        self._initial_policy = max(len(self._state["policy_commands"] or self._walkthrough), 1)
        self._instruction = " ".join(self._state["objective"].split())
        return f"{self._instruction}\n\n{_clean(self._state['description'])}"

    def _step(self, action: str) -> tuple[str, bool]:
        admissible = {c.lower(): c for c in self._state["admissible_commands"]}
        command = admissible.get(_normalise(action))
        if command is None:
            return (f"Nothing happens: {action!r} is not a valid action here. "
                    f"Valid actions: {', '.join(self._state['admissible_commands'])}."), False
        self._state, _, _ = self._tw.step(command)
        text = _clean(self._state.feedback) or "Nothing visible changes."
        return text, bool(self._state["won"] or self._state["lost"])

    def _success(self) -> bool:
        return self._state is not None and bool(self._state["won"])

    def _progress(self) -> float:
        if self._state is None:
            return 0.0
        if self._state["won"]:
            return 1.0
        score = self._state["score"] / max(self._state["max_score"], 1)
        remaining = len(self._state["policy_commands"] or [])
        walked = 1.0 - remaining / self._initial_policy
        return min(max(score, walked), 0.99)

    def available_actions(self) -> list[str] | None:
        """TextWorld's admissible commands in the current state."""
        return None if self._state is None else list(self._state["admissible_commands"])

    def expert_actions(self) -> list[str]:
        """The game's walkthrough (the generator's winning policy) from the initial state."""
        if self._state is None:
            raise RuntimeError("textworld: call reset(seed) before expert_actions()")
        return list(self._walkthrough)


register(EnvSpec(
    name="textworld", factory=TextWorldEnv, env_type="game", role="held_out",
    stands_for="AgentBoard Jericho (interactive fiction; Jericho's game files are not redistributable)",
    source="textworld 1.7.0 generator",
    description="Small TextWorld adventures (2-4 rooms, quest length 2-4) generated offline from the seed and "
                "cached; admissible commands; progress = max(score/max_score, fraction of the walkthrough covered).",
))
