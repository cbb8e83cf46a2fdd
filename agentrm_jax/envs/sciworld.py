"""`sciworld`: ScienceWorld (the Java simulator, via the `scienceworld` package) on a few short task types.

Stands for the SciWorld task of AgentBoard/AgentRM. A task instance is one
(task type, variation) pair: the task type is drawn from `TASKS` by
`task_seed("sciworld", split, seed)` (or fixed with the `task=` kwarg) and
the variation is drawn from ScienceWorld's own train variations (split
"train") or test variations (split "test"), so train and test never share an
instance and the same (split, seed) always gives the same one.

TASKS are five task types whose gold paths are short (2-16 actions, so the
expert fits the default 30 turns): find-non-living-thing, find-animal,
lifespan-longest-lived, lifespan-shortest-lived and power-component
(chemistry-mix-paint-secondary-color was left out: some of its gold paths
take 35 actions).

Observation: the first one is the task description (the instruction) and the
output of "look around"; later ones are the simulator's text for the action.
Actions are ScienceWorld's own command strings ("open door to kitchen", "go
to kitchen", "focus on blue jay", "move cup to red box", "pick up X",
"wait1", ...). `available_actions()` returns ScienceWorld's valid
action-object combinations for the current state (thousands of strings,
~1 s to compute). When the simulator answers "Ambiguous request", the env
picks option 0 automatically (as AgentBoard does) and says so. An action the
parser does not know is answered with "Nothing happens ... Valid action
templates: ...", and counts as a turn. "reset task" is refused (it would undo
the episode inside the simulator).

Expert: ScienceWorld's gold action sequence (load(..., generateGoldPath=True)).
The gold path may end with "wait1"/"look around" steps after the task is
already completed; replaying it ends the episode at completion. Progress:
ScienceWorld's score / 100 clipped to [0, 1] (the base class keeps the
maximum); success: the task is completed with a full score. A negative score
(e.g. focusing on the wrong object) is a terminal failure.

One JVM is started per process and shared (each env instance gets its own
simulator object inside it); a forked child starts its own. snapshot/restore
replay the actions from reset (cheap: the simulator is reset in place when
the task is already loaded). Needs Java 17 on the PATH.
"""

from __future__ import annotations

import random

from agentrm_jax.envs.base import EnvSpec, ReplayEnv, register, task_seed
from agentrm_jax.envs.jvm import SharedJvm, java_available

__all__ = ["TASKS", "SciWorldEnv", "java_available", "variations"]

TASKS = (
    "find-non-living-thing",
    "find-animal",
    "lifespan-longest-lived",
    "lifespan-shortest-lived",
    "power-component",
)
_VARIATIONS: dict[tuple[str, str], tuple[int, ...]] = {}


def _start_gateway():
    try:
        from scienceworld import ScienceWorldEnv
    except ImportError as err:  # pragma: no cover - the package is a listed dependency of this env
        raise ImportError("sciworld: the scienceworld package is missing; pip install scienceworld==1.2.3") from err
    return ScienceWorldEnv("", envStepLimit=10**6)


_JVM = SharedJvm(_start_gateway)


def _shared_env():
    """The process's ScienceWorldEnv (one JVM per process; restarted after a fork)."""
    return _JVM.get(java=java_available, who="sciworld", simulator="ScienceWorld")


def _new_server():
    """A fresh, independent simulator object in the shared JVM."""
    return _shared_env()._gateway.jvm.scienceworld.runtime.pythonapi.PythonInterface()


def variations(task: str, split: str) -> tuple[int, ...]:
    """ScienceWorld's own train or test variation indices of `task` (cached per process)."""
    key = (task, split)
    if key not in _VARIATIONS:
        server = _new_server()
        server.load(task, 0, "", False)
        _VARIATIONS[(task, "train")] = tuple(int(v) for v in server.getVariationsTrain())
        _VARIATIONS[(task, "test")] = tuple(int(v) for v in server.getVariationsTest())
        _detach(server)
    return _VARIATIONS[key]


def _detach(server) -> None:
    _JVM.detach(server)


class SciWorldEnv(ReplayEnv):
    """ScienceWorld on a few short task types (see the module docstring)."""

    name = "sciworld"

    def __init__(self, *, split: str = "train", max_turns: int = 30, task: str | None = None,
                 simplification: str = ""):
        super().__init__(split=split, max_turns=max_turns)
        if task is not None and task not in TASKS:
            raise ValueError(f"sciworld: unknown task {task!r}; choose one of {', '.join(TASKS)}")
        self.task_choice = task
        self.simplification = simplification
        self._server = None
        self._loaded: tuple[str, int] | None = None
        self._gold: list[str] = []
        self._score = 0.0
        self._completed = False
        self.task_name: str | None = None
        self.variation: int | None = None

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
        rng = random.Random(task_seed(self.name, self.split, seed))
        task = self.task_choice or TASKS[rng.randrange(len(TASKS))]
        pool = variations(task, self.split)
        variation = pool[rng.randrange(len(pool))]
        if self._server is None:
            self._server = _new_server()
        if self._loaded != (task, variation):
            self._server.load(task, variation, self.simplification, True)
            self._gold = [str(a) for a in self._server.getGoldActionSequence()]
            self._loaded = (task, variation)
        self._server.reset()
        self.task_name, self.variation = task, variation
        look = str(self._server.step("look around"))
        self._read_score()
        self._instruction = " ".join(str(self._server.getTaskDescription()).replace("Task Description:", "").split())
        return f"{self._instruction}\n\n{look.strip()}"

    def _read_score(self) -> None:
        self._score = float(self._server.getScore())
        self._completed = bool(self._server.getCompleted())

    def _step(self, action: str) -> tuple[str, bool]:
        command = " ".join(action.split())
        if command.lower() == "reset task":
            return "Nothing happens: 'reset task' is not allowed here.", False
        if not command:
            return self._unknown(action), False
        observation = str(self._server.step(command))
        if observation.startswith("Ambiguous request"):
            options = [ln.split(":", 1)[1].strip() for ln in observation.splitlines()[1:] if ":" in ln]
            chosen = options[0] if options else "option 0"
            observation = f"(Ambiguous request; chose option 0: {chosen}) " + str(self._server.step("0"))
        elif observation.startswith(("No known action matches", "Unknown action")):
            return self._unknown(action), False
        self._read_score()
        if self._score < 0:
            return f"{observation.strip()}\nThe task has failed.", True
        return observation.strip(), self._completed

    def _unknown(self, action: str) -> str:
        templates = ", ".join(str(t) for t in self._server.getPossibleActions())
        return (f"Nothing happens: {action!r} is not a valid action. Valid action templates: {templates} "
                f"(OBJ: an object you can see).")

    def _success(self) -> bool:
        return self._completed and self._score >= 1.0

    def _progress(self) -> float:
        return min(max(self._score, 0.0), 1.0)

    def available_actions(self) -> list[str] | None:
        """ScienceWorld's valid action-object combinations in the current state."""
        if self._server is None:
            return None
        return [str(a) for a in self._server.getValidActionObjectCombinations() if str(a) != "reset task"]

    def expert_actions(self) -> list[str]:
        """ScienceWorld's gold action sequence for this (task, variation)."""
        if self._server is None:
            raise RuntimeError("sciworld: call reset(seed) before expert_actions()")
        return list(self._gold)


register(EnvSpec(
    name="sciworld", factory=SciWorldEnv, env_type="embodied", role="held_in",
    stands_for="AgentBoard/AgentRM SciWorld", source="scienceworld 1.2.3 (Java)",
    description="ScienceWorld on five short task types (find-non-living-thing, find-animal, lifespan-longest/"
                "shortest-lived, power-component); variations from ScienceWorld's own "
                "train/test lists; progress = score/100 clipped to [0, 1].",
))
