"""`maze`: a text grid maze with partial observation, standing in for AgentBoard's Maze.

Each task is a perfect maze (exactly one path between any two cells) carved by
a randomized depth-first search on a grid of 5x5 to 7x7 cells, with a start
and a goal cell 4 to 14 moves apart. Everything is generated from
`task_seed("maze", split, seed)`, so the same (split, seed) always gives the
same maze and train/test never share one.

Coordinates are `(x, y)`: x grows to the east, y grows to the south, and
`(0, 0)` is the north-west corner. The instruction states the maze size, the
start and the goal position (as AgentBoard's Maze does); every observation
states the current position and what lies in each of the four directions
(`wall`, `open`, or `the goal`), e.g.

    You are at (2, 3). North: wall. South: open. East: the goal. West: open.

Actions are moves: `move north|south|east|west` (also `go east`, `north`,
`move up`/`down`/`left`/`right`, any case, trailing punctuation ignored).
`available_actions()` always lists the four moves, walls included: bumping
into a wall is a legal but useless turn. The expert is a BFS shortest path
from the start. Progress is the fraction of the start-to-goal shortest-path
distance covered, `1 - dist(position, goal) / dist(start, goal)` (the base
class keeps its maximum over the episode), which is 1.0 exactly at the goal.
"""

from __future__ import annotations

import random
import re
from collections import deque
from typing import Any

from agentrm_jax.envs.base import EnvSpec, ReplayEnv, register, task_seed

__all__ = ["MazeEnv", "MazeTask", "generate_maze", "parse_move"]

Cell = tuple[int, int]

# direction -> (dx, dy); y grows to the south
DIRECTIONS: dict[str, Cell] = {"north": (0, -1), "south": (0, 1), "east": (1, 0), "west": (-1, 0)}
_SYNONYMS = {"north": "north", "n": "north", "up": "north", "south": "south", "s": "south", "down": "south",
             "east": "east", "e": "east", "right": "east", "west": "west", "w": "west", "left": "west"}
_FILLER = {"move", "go", "walk", "step", "head", "to", "the", "towards", "toward", "one", "1", "a", "action",
           "i", "will", "please", "cell", "square"}
MOVES = [f"move {d}" for d in DIRECTIONS]

MIN_CELLS, MAX_CELLS = 5, 7
MIN_DIST, MAX_DIST = 4, 14


class MazeTask:
    """A generated maze: its size, open passages, start and goal, and BFS distances to the goal."""

    def __init__(self, width: int, height: int, passages: set[frozenset[Cell]], start: Cell, goal: Cell):
        self.width, self.height = width, height
        self.passages = passages
        self.start, self.goal = start, goal
        self.dist_to_goal = self._bfs(goal)

    def is_open(self, cell: Cell, direction: str) -> bool:
        """Whether one may move from `cell` one step in `direction` (no wall in between)."""
        dx, dy = DIRECTIONS[direction]
        return frozenset((cell, (cell[0] + dx, cell[1] + dy))) in self.passages

    def neighbours(self, cell: Cell) -> list[tuple[str, Cell]]:
        """The (direction, cell) pairs reachable from `cell` in one move."""
        return [(d, (cell[0] + dx, cell[1] + dy)) for d, (dx, dy) in DIRECTIONS.items() if self.is_open(cell, d)]

    def _bfs(self, source: Cell) -> dict[Cell, int]:
        dist = {source: 0}
        queue = deque([source])
        while queue:
            cell = queue.popleft()
            for _, nxt in self.neighbours(cell):
                if nxt not in dist:
                    dist[nxt] = dist[cell] + 1
                    queue.append(nxt)
        return dist

    def shortest_path(self, source: Cell) -> list[str]:
        """Moves (direction words) of a shortest path from `source` to the goal."""
        moves, cell = [], source
        while cell != self.goal:
            direction, cell = min(((d, c) for d, c in self.neighbours(cell)), key=lambda dc: self.dist_to_goal[dc[1]])
            moves.append(direction)
        return moves


def generate_maze(rng: random.Random) -> MazeTask:
    """A perfect maze carved by randomized DFS, with a start and a goal MIN_DIST..MAX_DIST moves apart."""
    width, height = rng.randint(MIN_CELLS, MAX_CELLS), rng.randint(MIN_CELLS, MAX_CELLS)
    passages: set[frozenset[Cell]] = set()
    first = (rng.randrange(width), rng.randrange(height))
    visited, stack = {first}, [first]
    while stack:
        x, y = stack[-1]
        options = [(x + dx, y + dy) for dx, dy in DIRECTIONS.values()
                   if 0 <= x + dx < width and 0 <= y + dy < height and (x + dx, y + dy) not in visited]
        if not options:
            stack.pop()
            continue
        nxt = rng.choice(options)
        passages.add(frozenset(((x, y), nxt)))
        visited.add(nxt)
        stack.append(nxt)
    cells = sorted(visited)
    start = rng.choice(cells)
    probe = MazeTask(width, height, passages, start, start)  # distances from the start
    far = max(probe.dist_to_goal.values())
    lo, hi = min(MIN_DIST, far), min(MAX_DIST, far)
    goal = rng.choice([c for c in cells if lo <= probe.dist_to_goal[c] <= hi])
    return MazeTask(width, height, passages, start, goal)


def parse_move(action: str) -> str | None:
    """The direction an action string names ("move north", "Go East.", "up"), or None if it names none."""
    words = [w for w in re.split(r"[^a-z0-9]+", action.lower()) if w and w not in _FILLER]
    if len(words) == 1 and words[0] in _SYNONYMS:
        return _SYNONYMS[words[0]]
    return None


class MazeEnv(ReplayEnv):
    """AgentBoard-Maze-like text maze (see the module docstring for observations, actions and progress)."""

    name = "maze"

    def __init__(self, *, split: str = "train", max_turns: int = 30):
        super().__init__(split=split, max_turns=max_turns)
        self.task: MazeTask | None = None
        self.position: Cell = (0, 0)

    # -- rendering --------------------------------------------------------------------------------
    def _describe(self) -> str:
        parts = [f"You are at {self.position}."]
        for direction, (dx, dy) in DIRECTIONS.items():
            if not self.task.is_open(self.position, direction):
                what = "wall"
            elif (self.position[0] + dx, self.position[1] + dy) == self.task.goal:
                what = "the goal"
            else:
                what = "open"
            parts.append(f"{direction.capitalize()}: {what}.")
        return " ".join(parts)

    # -- ReplayEnv hooks --------------------------------------------------------------------------
    def _reset(self, seed: int) -> str:
        self.task = generate_maze(random.Random(task_seed(self.name, self.split, seed)))
        self.position = self.task.start
        t = self.task
        self._instruction = (
            f"You are in a {t.width}x{t.height} grid maze. Coordinates are (x, y): x grows to the east, "
            f"y grows to the south, and (0, 0) is the north-west corner. Your goal is to reach the goal cell. "
            f"The goal is at {t.goal}. You start at {t.start}. Walls block some moves; each turn you see what lies "
            f"in each direction. Actions: {', '.join(MOVES)}."
        )
        return f"{self._instruction}\n{self._describe()}"

    def _step(self, action: str) -> tuple[str, bool]:
        direction = parse_move(action)
        if direction is None:
            return (f"Nothing happens: {action!r} is not a valid action. Valid actions: {', '.join(MOVES)}. "
                    f"{self._describe()}"), False
        if not self.task.is_open(self.position, direction):
            return f"You bump into a wall to the {direction} and stay where you are. {self._describe()}", False
        dx, dy = DIRECTIONS[direction]
        self.position = (self.position[0] + dx, self.position[1] + dy)
        if self.position == self.task.goal:
            return f"You move {direction} and reach the goal at {self.position}! Task completed.", True
        return f"You move {direction}. {self._describe()}", False

    def _success(self) -> bool:
        return self.task is not None and self.position == self.task.goal

    def _progress(self) -> float:
        initial = self.task.dist_to_goal[self.task.start]
        return 1.0 - self.task.dist_to_goal[self.position] / initial

    def available_actions(self) -> list[str]:
        """The four moves (walls are not filtered out: the agent must read the observation)."""
        return list(MOVES)

    def expert_actions(self) -> list[str]:
        """A BFS shortest path from the task's start to its goal."""
        if self.task is None:
            raise RuntimeError("maze: call reset(seed) before expert_actions()")
        return [f"move {d}" for d in self.task.shortest_path(self.task.start)]

    def expert_actions_from_here(self) -> list[str]:
        """A BFS shortest path from the current position to the goal."""
        if self.task is None:
            raise RuntimeError("maze: call reset(seed) before expert_actions_from_here()")
        return [f"move {d}" for d in self.task.shortest_path(self.position)]

    # -- cheap snapshot: the position is the whole state, no replay ---------------------------------
    def _copy_state(self) -> Any:
        return self.position

    def _set_state(self, state: Any) -> None:
        self.position = tuple(state)


register(EnvSpec(
    name="maze", factory=MazeEnv, env_type="game", role="held_out", stands_for="AgentBoard Maze", source="ours",
    description="Randomized-DFS grid maze (5x5 to 7x7 cells) with partial text observation of the four directions; "
                "move north/south/east/west; progress = fraction of the shortest-path distance to the goal covered.",
))
