"""Data flows one way: the import graph between our packages, read from every module's imports.

    records, runs, yaml_config, lazy_exports  below everything (runs reads JSONL through records)
    envs                                    nothing of ours: environments know no JAX
    models <- sampling <- agents <- search <- evaluate
    rewards, training                       models and the records (training also rewards: it trains them)
    sft                                     policy SFT: agents (prompts, episodes) over training (the trainer)
    pipeline                                on top: `agentrm demo`'s stages call every stage package in process

`agentrm_jax/cli.py` and every `commands.py` are the CLI layer: they only parse,
call the library and print, and may import any package. Imports inside
functions count as much as module-level ones.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "agentrm_jax"
BASE = {"records", "runs", "yaml_config", "lazy_exports"}
ALLOWED: dict[str, set[str]] = {
    "__init__": set(), "records": set(), "runs": {"records"}, "yaml_config": set(), "lazy_exports": set(),
    "serve_loop": set(),
    "envs": set(),
    "models": BASE,
    "sampling": BASE | {"models"},
    "rewards": BASE | {"models"},
    "training": BASE | {"models", "rewards"},
    "agents": BASE | {"models", "sampling", "envs"},
    "search": BASE | {"models", "sampling", "envs", "agents", "rewards"},
    "explore": BASE | {"models", "sampling", "envs", "agents", "rewards", "search"},
    "evaluate": BASE | {"models", "sampling", "envs", "agents", "rewards", "search", "explore", "training"},
    "sft": BASE | {"models", "sampling", "envs", "agents", "rewards", "training"},
    "pipeline": BASE | {"models", "sampling", "envs", "agents", "rewards", "search", "explore", "evaluate",
                        "training", "sft"},
}
CLI_LAYER = {"cli"}


def _unit(relative: Path) -> str:
    """The package (or top-level module) a file belongs to: agents/loop.py -> agents, records.py -> records."""
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def imported_units(source: str, module: str) -> set[str]:
    """Our packages / top-level modules imported anywhere in `source` (the module `module`, dotted)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                base = module.split(".")[: -node.level]
                names = [".".join(base + ([node.module] if node.module else []))]
            else:
                names = [node.module or ""]
            if names[0] == "agentrm_jax":  # `from agentrm_jax import records`
                names = [f"agentrm_jax.{a.name}" for a in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "agentrm_jax" and len(parts) > 1:
                found.add(parts[1])
    return found


def back_edges(files: dict[Path, str]) -> list[str]:
    """'path imports unit' for every import the layering forbids (`files`: path under agentrm_jax -> source)."""
    bad = []
    for relative, source in sorted(files.items()):
        unit = _unit(relative)
        if unit in CLI_LAYER or relative.name == "commands.py":
            continue
        if unit not in ALLOWED:
            bad.append(f"{relative}: package {unit!r} has no place in the layering table (tests/test_layering.py)")
            continue
        module = ".".join(("agentrm_jax", *relative.with_suffix("").parts))
        for target in sorted(imported_units(source, module) - {unit}):
            if target not in ALLOWED[unit]:
                bad.append(f"{relative} imports agentrm_jax.{target}")
    return bad


def test_the_import_graph_flows_one_way():
    files = {p.relative_to(PACKAGE): p.read_text(encoding="utf-8") for p in PACKAGE.rglob("*.py")}
    assert len(files) > 50
    assert back_edges(files) == []


def test_the_check_sees_the_back_edges_it_exists_for():
    cases = {
        Path("rewards/scoring.py"): "from agentrm_jax.agents.trajectory import Trajectory\n",
        Path("training/data.py"): "def f():\n    from agentrm_jax.agents import prompts\n",
        Path("envs/maze.py"): "import agentrm_jax.models.llama\n",
        Path("models/llama.py"): "from agentrm_jax import sampling\n",
        Path("sampling/sampler.py"): "from ..agents.policies import JaxPolicy\n",
        Path("records.py"): "from agentrm_jax.envs import make\n",
        Path("agents/loop.py"): "from agentrm_jax.search import greedy\n",
    }
    found = back_edges(cases)
    assert found == [
        "agents/loop.py imports agentrm_jax.search",
        "envs/maze.py imports agentrm_jax.models",
        "models/llama.py imports agentrm_jax.sampling",
        "records.py imports agentrm_jax.envs",
        "rewards/scoring.py imports agentrm_jax.agents",
        "sampling/sampler.py imports agentrm_jax.agents",
        "training/data.py imports agentrm_jax.agents",
    ]
    # the CLI layer may import anything
    assert back_edges({Path("rewards/commands.py"): "from agentrm_jax.training.trainer import train\n",
                       Path("cli.py"): "import agentrm_jax.evaluate\n"}) == []
