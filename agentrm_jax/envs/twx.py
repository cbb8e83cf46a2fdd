"""`twx`: TextWorldExpress household games (cook a recipe; put things where they belong), standing in for ALFWorld.

TextWorldExpress 1.1.0 (the `textworld-express` package: a Java simulator
over py4j, games generated from a seed, gold action sequences built in,
nothing downloaded) simulates eight text games; four are wrapped here:

- `cookingworld`: find the cookbook, gather the recipe's ingredients, slice /
  chop / cook them as the recipe says, prepare the meal and eat it
  (TextWorld's "First TextWorld Problems" cooking games).
- `twc`: TextWorld Commonsense: pick up misplaced household objects and put
  them where they belong (the dirty shirt in the laundry basket, the coat on
  the coat hanger), ALFWorld's pick-and-place in another simulator.
- `coin`: search the house for a coin and take it.
- `mapreader`: read a map, walk to the coin, bring it back to a box.

Registered names: `twx` is the household family (cookingworld on even seeds,
twc on odd ones, or fixed with `game=`), and `twx_cookingworld`, `twx_twc`,
`twx_coin`, `twx_mapreader` each play one game. The household ones (`twx`,
`twx_cookingworld`, `twx_twc`) are held in and stand for AgentRM's ALFWorld;
`twx_coin` and `twx_mapreader` are registered as held out but belong to none
of the paper's nine tasks (see `configs/tasks/agentrm_split.yaml`): they are
navigation games in the held-in games' own simulator, with its room texts and
action words, so they measure transfer to a new goal within one simulator, not
to a new environment, and are kept out of the split's held-out average.

Tasks and splits: TextWorldExpress has its own folds, each with its own object
and ingredient sets ("gameSet") and seed list (train 0-999, dev 10000-10999,
test 20000-20999). Split "train" plays the train fold and "test" the test
fold (dev is unused); task `seed` of a one-game env is the fold's
`seed % 1000`-th seed, and task `seed` of the family is task `seed // 2` of
cookingworld (even seeds) or twc (odd seeds). So seeds 0-999 (0-1999 for the
family) play distinct simulator seeds, larger seeds repeat them, and train and
test never share a game (different seeds and different object sets).

Difficulty: the `params=` kwarg (a mapping of TextWorldExpress game
parameters) overrides `DEFAULT_PARAMS`. The defaults are one-room houses for
the household games, so that the family's gold path is about 6 actions on
average, as AgentBoard's ALFWorld: over seeds 0-19 the mean is 7.05 (train)
and 6.2 (test); cookingworld alone 9.55 / 7.9 (one ingredient, 5 distractor
items, which lengthen no plan but make the 1000 games of a fold differ: with
none, 200 train seeds hold 20 distinct games), twc alone 4.65 / 4.7 (two
objects). coin uses TextWorldExpress's own 11-room house with doors (plus 2
distractors); mapreader a 6-room map with the coin at most 3 rooms away.
Parameters (the simulator checks ranges and refuses a bad value at reset with
its own message, which the env raises as a ValueError): `numLocations` (rooms,
all games), `numIngredients` (cookingworld: recipe size 1-5),
`numDistractorItems` (cookingworld, coin), `numItemsToPutAway` (twc: 1-4 in
one room, more with more rooms),
`maxDistanceApart` and `maxDistractorItemsPerLocation` (mapreader),
`includeDoors` and `limitInventorySize` (0/1, all games). In the family a
parameter applies to the games that have it; a name no game of the env has is
refused at construction. A fold seed the generator cannot build with the
given parameters (mapreader: no two rooms far enough apart) is replaced by the
fold's next seed (`game_seed` says which was played).

Observation: the first one is the task description (the instruction) and the
starting room's description; later ones are the simulator's text for the
action. Actions: the simulator's valid actions (`available_actions()`, e.g.
"take cookbook", "open fridge", "cook red potato in oven", "put umbrella in
umbrella stand", "move north"), matched case-insensitively with extra spaces
and trailing punctuation ignored; a bare or "go" direction ("north", "go
north") means "move north". Anything else is not sent to the simulator: it is
answered "Nothing happens ... Valid actions: ..." and counts as a turn.

Expert: the game's gold action sequence (`getGoldActionSequence()`) without
its leading "look around" (the first observation already shows the room),
except for coin, whose gold path is a random walk that the simulator does not
seed (it differs between JVMs): its expert is a shortest plan found by
breadth-first search over the simulator (move / open-door actions, replayed
from the start), the same in every process. The household and mapreader gold
paths are the same in every process.

Progress: the game's score, which TextWorldExpress normalises to [0, 1]
(points so far / points available), clipped to [0, 1]; the base class keeps
the maximum. Success: the game reports the task done; a failure the game
reports (e.g. cooking an ingredient the way the recipe does not ask) ends the
episode.

One JVM per process is shared by all envs (each env gets its own simulator
object in it); a forked child starts its own. snapshot/restore replay the
actions from reset (a reset is a few milliseconds). Needs Java on the PATH.
"""

from __future__ import annotations

import json
import re
from collections import deque
from collections.abc import Mapping
from typing import Any

from agentrm_jax.envs.base import EnvSpec, ReplayEnv, register
from agentrm_jax.envs.jvm import SharedJvm, java_available

__all__ = ["DEFAULT_PARAMS", "GAMES", "GAME_PARAMS", "HOUSEHOLD", "TwxCoinEnv", "TwxCookingWorldEnv", "TwxEnv",
           "TwxMapReaderEnv", "TwxTwcEnv", "game_seeds"]

INSTALL_HINT = "pip install textworld-express==1.1.0"
HOUSEHOLD = ("cookingworld", "twc")
GAMES = ("cookingworld", "twc", "coin", "mapreader")
# Each game's parameter names (as the simulator lists them when it rejects an unknown one).
GAME_PARAMS = {
    "cookingworld": ("numLocations", "numIngredients", "numDistractorItems", "includeDoors", "limitInventorySize"),
    "twc": ("numLocations", "numItemsToPutAway", "includeDoors", "limitInventorySize"),
    "coin": ("numLocations", "numDistractorItems", "includeDoors", "limitInventorySize"),
    "mapreader": ("numLocations", "maxDistanceApart", "maxDistractorItemsPerLocation", "includeDoors",
                  "limitInventorySize"),
}
DEFAULT_PARAMS = {
    "cookingworld": {"numLocations": 1, "numIngredients": 1, "numDistractorItems": 5, "includeDoors": 0,
                     "limitInventorySize": 0},
    "twc": {"numLocations": 1, "numItemsToPutAway": 2, "includeDoors": 0, "limitInventorySize": 0},
    "coin": {"numLocations": 11, "numDistractorItems": 2, "includeDoors": 1, "limitInventorySize": 0},
    "mapreader": {"numLocations": 6, "maxDistanceApart": 3, "maxDistractorItemsPerLocation": 1, "includeDoors": 0,
                  "limitInventorySize": 0},
}
_FOLDS = {"train": "train", "test": "test"}  # our split -> TextWorldExpress's gameFold (dev unused)
_SEARCH_NODES = 2000  # states the coin expert's breadth-first search may visit
_REDRAWS = 10  # fold seeds tried in turn when the generator cannot build one with the given parameters
_DIRECTIONS = ("north", "south", "east", "west")

_SEEDS: dict[tuple[str, str], tuple[int, ...]] = {}


def _start_gateway():
    try:
        from textworld_express import TextWorldExpressEnv
    except ImportError as err:
        raise ImportError(f"twx: the textworld-express package is missing; {INSTALL_HINT}") from err
    return TextWorldExpressEnv(envStepLimit=10**6)


_JVM = SharedJvm(_start_gateway)


def _shared_env():
    """The process's TextWorldExpressEnv (one JVM per process; restarted after a fork)."""
    return _JVM.get(java=java_available, who="twx", simulator="TextWorldExpress")


def _new_server():
    """A fresh, independent simulator object in the shared JVM."""
    return _shared_env()._gateway.jvm.textworldexpress.runtime.PythonInterface()


def _detach(server) -> None:
    _JVM.detach(server)


def game_seeds(game: str, split: str) -> tuple[int, ...]:
    """TextWorldExpress's own seeds of `game` in the fold of `split` (cached per process)."""
    if game not in GAMES:
        raise ValueError(f"twx: unknown game {game!r}; choose one of {', '.join(GAMES)}")
    key = (game, split)
    if key not in _SEEDS:
        server = _new_server()
        server.load(game, "")
        _SEEDS[(game, "train")] = tuple(int(s) for s in server.getSeedsTrain())
        _SEEDS[(game, "test")] = tuple(int(s) for s in server.getSeedsTest())
        _detach(server)
    return _SEEDS[key]


def _param_string(params: Mapping[str, int]) -> str:
    return ",".join(f"{k}={int(params[k])}" for k in sorted(params))


def _normalise(action: str) -> str:
    words = re.sub(r"[.!?;:,\"']+$", "", " ".join(action.lower().split())).split()
    if len(words) == 1 and words[0] in _DIRECTIONS:
        words = ["move", words[0]]
    if len(words) == 2 and words[0] in ("go", "walk", "head") and words[1] in _DIRECTIONS:
        words = ["move", words[1]]
    return " ".join(words)


class TwxEnv(ReplayEnv):
    """TextWorldExpress household games (see the module docstring); subclasses fix one game."""

    name = "twx"
    GAMES: tuple[str, ...] = HOUSEHOLD

    def __init__(self, *, split: str = "train", max_turns: int = 30, game: str | None = None,
                 params: Mapping[str, int] | None = None):
        super().__init__(split=split, max_turns=max_turns)
        if game is not None and game not in self.GAMES:
            raise ValueError(f"{self.name}: unknown game {game!r}; choose one of {', '.join(self.GAMES)}")
        games = (game,) if game else self.GAMES
        params = dict(params or {})
        known = {p for g in games for p in GAME_PARAMS[g]}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"{self.name}: unknown game parameter {unknown[0]!r} for {'/'.join(games)}; "
                             f"known: {', '.join(sorted(known))}")
        for key, value in params.items():
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{self.name}: game parameter {key} must be an integer, got {value!r}")
        self.game_choice = game
        self.params = params
        self._server = None
        self._loaded: tuple[str, str] | None = None
        self._state: dict[str, Any] | None = None
        self._gold: list[str] = []
        self.game: str | None = None
        self.game_seed: int | None = None

    def game_params(self, game: str) -> dict[str, int]:
        """The parameters `game` is generated with: its defaults, overridden by `params=` where it has them."""
        return {**DEFAULT_PARAMS[game], **{k: v for k, v in self.params.items() if k in GAME_PARAMS[game]}}

    def _choose(self, seed: int) -> tuple[str, int]:
        """(game, index into the fold's seeds) of task `seed`."""
        if self.game_choice is not None or len(self.GAMES) == 1:
            return self.game_choice or self.GAMES[0], seed
        return self.GAMES[seed % len(self.GAMES)], seed // len(self.GAMES)

    def close(self) -> None:
        """Release this env's simulator object (the shared JVM keeps running)."""
        if self._server is not None:
            _detach(self._server)
        self._server, self._loaded = None, None

    def __del__(self):
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    # -- ReplayEnv hooks --------------------------------------------------------------------------
    def _reset(self, seed: int) -> str:
        game, index = self._choose(seed)
        pool = game_seeds(game, self.split)
        params = _param_string(self.game_params(game))
        if self._server is None:
            self._server = _new_server()
        if self._loaded != (game, params):
            message = str(self._server.load(game, params) or "")
            if message:
                self._loaded = None
                raise ValueError(f"{self.name}: TextWorldExpress rejected the {game} parameters {params!r}: "
                                 f"{' '.join(message.split())}")
            self._loaded = (game, params)
        self._state, game_seed = self._generate(game, params, pool, index)
        gold = [str(a) for a in self._server.getGoldActionSequence()]
        self._gold = gold[1:] if gold and gold[0] == "look around" else gold
        if game == "coin":
            self._gold = self._search_coin(game_seed) or self._gold
        self.game, self.game_seed = game, game_seed
        self._instruction = " ".join(str(self._server.getTaskDescription()).split())
        return f"{self._instruction}\n\n{self._state['observation'].strip()}"

    def _generate(self, game: str, params: str, pool: tuple[int, ...], index: int) -> tuple[dict[str, Any], int]:
        """(first state, simulator seed) of the fold's `index`-th seed, or of the next ones where the generator
        cannot build that seed with these parameters (e.g. no two rooms far enough apart for mapreader)."""
        from py4j.protocol import Py4JJavaError

        for k in range(_REDRAWS):
            game_seed = pool[(index + k) % len(pool)]
            try:
                return json.loads(self._server.generateNewGameJSON(game_seed, _FOLDS[self.split], True)), game_seed
            except Py4JJavaError as err:
                reason = str(err.java_exception.getMessage() or err)
        raise ValueError(f"{self.name}: TextWorldExpress cannot generate {game} games with parameters {params!r} "
                         f"(seeds {pool[index % len(pool)]} and the {_REDRAWS - 1} after it failed: "
                         f"{' '.join(reason.split())}); make the game smaller or easier")

    def _search_coin(self, game_seed: int) -> list[str]:
        """A shortest plan to take the coin (breadth-first over move / open-door actions, replaying each path
        from the game's start), or [] if none within `_SEARCH_NODES` states; leaves the game at its start.

        Coin's gold path is a random walk the simulator does not seed (it differs between JVMs), so the
        expert is searched instead: the same plan in every process, and the shortest."""
        fold = _FOLDS[self.split]

        def replay(path: tuple[str, ...]) -> dict[str, Any]:
            state = json.loads(self._server.generateNewGameJSON(game_seed, fold, False))
            for a in path:
                state = json.loads(self._server.stepJSON(a))
            return state

        frontier, seen, plan = deque([((), self._state)]), {self._state["look"]}, []
        while frontier and len(seen) < _SEARCH_NODES:
            path, state = frontier.popleft()
            valid = sorted(str(a) for a in state["validActions"])
            if "take coin" in valid:
                plan = [*path, "take coin"]
                break
            for action in valid:
                if action.startswith(("move ", "open door to ")):
                    child = replay((*path, action))
                    if child["look"] not in seen:
                        seen.add(child["look"])
                        frontier.append(((*path, action), child))
        self._state = replay(())
        return plan

    def _step(self, action: str) -> tuple[str, bool]:
        valid = {a.lower(): a for a in self._state["validActions"]}
        command = valid.get(_normalise(action))
        if command is None:
            return (f"Nothing happens: {action!r} is not a valid action here. "
                    f"Valid actions: {', '.join(self.available_actions())}."), False
        self._state = json.loads(self._server.stepJSON(command))
        observation = self._state["observation"].strip() or "Nothing visible changes."
        if self._state["taskfailure"]:
            return f"{observation}\nThe task has failed.", True
        if self._state["tasksuccess"]:
            return f"{observation}\nThe task is completed.", True
        return observation, False

    def _success(self) -> bool:
        return self._state is not None and bool(self._state["tasksuccess"])

    def _progress(self) -> float:
        return 0.0 if self._state is None else min(max(float(self._state["score"]), 0.0), 1.0)

    def available_actions(self) -> list[str] | None:
        """The simulator's valid actions in the current state, sorted."""
        return None if self._state is None else sorted(str(a) for a in self._state["validActions"])

    def expert_actions(self) -> list[str]:
        """The game's gold action sequence from the initial state (without a leading "look around")."""
        if self._state is None:
            raise RuntimeError(f"{self.name}: call reset(seed) before expert_actions()")
        return list(self._gold)


class TwxCookingWorldEnv(TwxEnv):
    """`twx_cookingworld`: cook the cookbook's recipe and eat the meal."""

    name = "twx_cookingworld"
    GAMES = ("cookingworld",)


class TwxTwcEnv(TwxEnv):
    """`twx_twc`: TextWorld Commonsense, put misplaced objects where they belong."""

    name = "twx_twc"
    GAMES = ("twc",)


class TwxCoinEnv(TwxEnv):
    """`twx_coin`: find the coin and take it."""

    name = "twx_coin"
    GAMES = ("coin",)


class TwxMapReaderEnv(TwxEnv):
    """`twx_mapreader`: read the map, fetch the coin, put it in the box."""

    name = "twx_mapreader"
    GAMES = ("mapreader",)


_SOURCE = "textworld-express 1.1.0 (Java)"
_EXTRA = "none of AgentRM's nine tasks (TextWorldExpress navigation, beside the held-in twx games; not in the split)"
register(EnvSpec(
    name="twx", factory=TwxEnv, env_type="embodied", role="held_in", stands_for="AgentRM ALFWorld", source=_SOURCE,
    description="TextWorldExpress household games in a one-room house: cookingworld (cook a recipe, even seeds) and "
                "twc (put 2 objects where they belong, odd seeds); folds train/test; progress = the game's score.",
))
for _cls, _role, _stands, _what in (
        (TwxCookingWorldEnv, "held_in", "AgentRM ALFWorld", "cook a 1-ingredient recipe in one room"),
        (TwxTwcEnv, "held_in", "AgentRM ALFWorld", "put 2 misplaced objects where they belong, one room"),
        (TwxCoinEnv, "held_out", _EXTRA, "find the coin in a 3-room house"),
        (TwxMapReaderEnv, "held_out", _EXTRA, "read the map, fetch the coin, bring it to the box (5 rooms)")):
    register(EnvSpec(
        name=_cls.name, factory=_cls, env_type="embodied", role=_role, stands_for=_stands, source=_SOURCE,
        description=f"TextWorldExpress {_cls.GAMES[0]}: {_what}; folds train/test; progress = the game's score.",
    ))
