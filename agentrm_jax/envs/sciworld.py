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
simulator object inside it); a forked child starts its own. Needs Java 17
(HotSpot) on the PATH.

Determinism. ScienceWorld 1.2.3 alone is not reproducible: it keeps objects in
hash sets keyed by Java identity hash codes, which HotSpot draws at random, so
the rooms' contents (e.g. which paint a cup holds), their order in the text and
the gold path changed between simulator objects and between resets of one. We
start the JVM with a constant identity hash (`-XX:hashCode=2`: every set then
iterates in insertion order, which the seeded world builder fixes), and, since
the simulator's random generator (`scala.util.Random`) and its object-id
counter are JVM-wide, each env installs its own copy of both before every call
that can use them and reads them back after (under one lock). So a (split,
seed) gives the same first observation, gold path and observations after the
same actions in every env object, reset and process. snapshot/restore replay
the actions from reset (cheap: a loaded task is rebuilt without regenerating
its gold path) and check a digest of the observations; a replay that does not
reproduce them raises instead of continuing from a different state.
"""

from __future__ import annotations

import hashlib
import random
import threading
from typing import Any

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


# HotSpot options that make ScienceWorld reproducible (see the module docstring): a constant identity hash
# code, and access to java.util.Random's state (SciWorldEnv keeps one per env).
JAVA_OPTIONS = ("-XX:+UnlockExperimentalVMOptions", "-XX:hashCode=2",
                "--add-opens", "java.base/java.util=ALL-UNNAMED")
_LCG_MULTIPLIER = 0x5DEECE66D  # java.util.Random.setSeed(s) stores s ^ this


class _Simulator:
    """The process's ScienceWorld JVM: its py4j gateway, and the JVM-wide state its simulator objects share."""

    def __init__(self, gateway):
        self._gateway = gateway  # SharedJvm.detach releases objects through it
        self.lock = threading.RLock()
        jvm = gateway.jvm
        if int(jvm.java.lang.System.identityHashCode(jvm.java.lang.Object())) != 1:
            raise RuntimeError("sciworld: this JVM ignored -XX:hashCode=2, so ScienceWorld would not be reproducible; "
                               "use a HotSpot (OpenJDK) Java 17")
        self._random = jvm.java.lang.Class.forName("scala.util.Random$").getField("MODULE$").get(None).self()
        self._random_seed = jvm.java.lang.Class.forName("java.util.Random").getDeclaredField("seed")
        self._random_seed.setAccessible(True)
        self._ids = jvm.util.UniqueIdentifier

    def new_server(self):
        """A fresh, independent simulator object."""
        return self._gateway.jvm.scienceworld.runtime.pythonapi.PythonInterface()

    def shared_state(self) -> tuple[int, int]:
        """(random generator state: 48 bits, last object id) as the simulator left them."""
        return int(self._random_seed.get(self._random)), int(self._ids.count())

    def install(self, state: tuple[int, int]) -> None:
        """Put back a `shared_state()` value."""
        self._random.setSeed(state[0] ^ _LCG_MULTIPLIER)
        getattr(self._ids, "count_$eq")(state[1])


def _start_gateway() -> _Simulator:
    try:
        from py4j.java_gateway import GatewayParameters, JavaGateway, launch_gateway
        from scienceworld.constants import BASEPATH, JAR_PATH
    except ImportError as err:  # pragma: no cover - the package is a listed dependency of this env
        raise ImportError("sciworld: the scienceworld package is missing; pip install scienceworld==1.2.3") from err
    try:
        port, proc = launch_gateway(classpath=JAR_PATH, javaopts=list(JAVA_OPTIONS), die_on_exit=True, cwd=BASEPATH,
                                    return_proc=True)
    except Exception as err:  # noqa: BLE001 - py4j raises bare Exceptions when java refuses to start
        raise RuntimeError(f"sciworld: could not start ScienceWorld's JVM with {' '.join(JAVA_OPTIONS)} "
                           f"(needs a HotSpot Java 17): {err}") from err
    return _Simulator(JavaGateway(gateway_parameters=GatewayParameters(auto_field=True, port=port), java_process=proc))


_JVM = SharedJvm(_start_gateway)


def _simulator() -> _Simulator:
    """The process's ScienceWorld JVM (one per process; restarted after a fork)."""
    return _JVM.get(java=java_available, who="sciworld", simulator="ScienceWorld")


def variations(task: str, split: str) -> tuple[int, ...]:
    """ScienceWorld's own train or test variation indices of `task` (cached per process)."""
    key = (task, split)
    if key not in _VARIATIONS:
        sim = _simulator()
        server = sim.new_server()
        with sim.lock:  # load reseeds the JVM-wide generator: not while another env's call runs
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
        self._shared: tuple[int, int] | None = None  # this env's copy of the JVM-wide state (_Simulator.shared_state)
        self._digest = ""  # of the observations since reset; a replay must reproduce it
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

    def _call(self, method: str, *args: Any) -> Any:
        """`self._server.<method>(*args)` with this env's random generator and object-id counter installed
        (for calls that can draw random numbers or make objects: load, step, the valid-action list)."""
        sim = _simulator()
        with sim.lock:
            if self._shared is not None:
                sim.install(self._shared)
            out = getattr(self._server, method)(*args)
            self._shared = sim.shared_state()
        return out

    def _note(self, observation: str) -> str:
        self._digest = hashlib.sha256(f"{self._digest}\0{observation}".encode()).hexdigest()
        return observation

    # -- ReplayEnv hooks --------------------------------------------------------------------------
    def _reset(self, seed: int) -> str:
        rng = random.Random(task_seed(self.name, self.split, seed))
        task = self.task_choice or TASKS[rng.randrange(len(TASKS))]
        pool = variations(task, self.split)
        variation = pool[rng.randrange(len(pool))]
        if self._server is None:
            self._server = _simulator().new_server()
        if self._loaded != (task, variation):
            self._call("load", task, variation, self.simplification, True)
            self._gold = [str(a) for a in self._server.getGoldActionSequence()]
            self._loaded = (task, variation)
        else:  # the same world as the first load's, without recomputing its gold path
            self._call("load", task, variation, self.simplification, False)
        self.task_name, self.variation = task, variation
        look = str(self._call("step", "look around"))
        self._read_score()
        self._instruction = " ".join(str(self._server.getTaskDescription()).replace("Task Description:", "").split())
        self._digest = ""
        return self._note(f"{self._instruction}\n\n{look.strip()}")

    def _read_score(self) -> None:
        self._score = float(self._server.getScore())
        self._completed = bool(self._server.getCompleted())

    def _step(self, action: str) -> tuple[str, bool]:
        observation, terminal = self._simulate(action)
        return self._note(observation), terminal

    def _simulate(self, action: str) -> tuple[str, bool]:
        command = " ".join(action.split())
        if command.lower() == "reset task":
            return "Nothing happens: 'reset task' is not allowed here.", False
        if not command:
            return self._unknown(action), False
        observation = str(self._call("step", command))
        if observation.startswith("Ambiguous request"):
            options = [ln.split(":", 1)[1].strip() for ln in observation.splitlines()[1:] if ":" in ln]
            chosen = options[0] if options else "option 0"
            observation = f"(Ambiguous request; chose option 0: {chosen}) " + str(self._call("step", "0"))
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
        return [str(a) for a in self._call("getValidActionObjectCombinations") if str(a) != "reset task"]

    def snapshot(self) -> tuple[int | None, tuple[str, ...], str]:
        """(seed, actions since reset, digest of the observations they gave) for a verified replay."""
        return (self._seed, tuple(self._actions), self._digest)

    def restore(self, snapshot: tuple) -> None:
        """Replay `snapshot`'s actions from reset; RuntimeError if they do not give the same observations
        (the snapshot then came from a simulator in another state, e.g. another scienceworld version)."""
        seed, actions, *digest = snapshot
        super().restore((seed, actions))
        if digest and digest[0] != self._digest:
            raise RuntimeError(f"sciworld: replaying {len(actions)} actions of seed {seed} ({self.task_name}, "
                               f"variation {self.variation}) gave other observations than the snapshot's; "
                               "the simulator did not reproduce that episode")

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
