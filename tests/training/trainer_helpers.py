"""Shared builders for trainer tests: a tiny random model (in memory or saved as an HF directory with the
bundled tokenizer, so `TrainConfig.model` can name it from a subprocess), tiny JSONL data, YAML configs and
subprocesses with N fake CPU devices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from agentrm_jax.records import PreferencePair, Step, Trajectory, write_jsonl

REPO = Path(__file__).resolve().parents[2]

# vocab 49152: the bundled tokenizer's ids. Every sharded dimension divides fsdp=8 (embed 48) or
# tensor=2 (vocab 49152, heads 4, kv heads 2, mlp 64). Tied embeddings: one [49152, 48] table, not two.
TINY = dict(vocab_size=49152, hidden_size=48, intermediate_size=64, num_heads=4, num_kv_heads=2, head_dim=12,
            tie_word_embeddings=True)


def tiny_config(**overrides):
    from agentrm_jax.models import ModelConfig

    return ModelConfig.tiny(**{**TINY, **overrides})


def tiny_model(seed: int = 0, **overrides):
    """A random LlamaForCausalLM of `tiny_config(**overrides)` (float32): normal(0.02) weights, unit norms,
    zero biases, like `init_model`, but drawn by numpy: jax's random init compiles an op per shape (~10 s
    on a busy 2-core machine)."""
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from agentrm_jax.models import LlamaForCausalLM

    model = LlamaForCausalLM(tiny_config(**overrides), rngs=None)
    rng = np.random.default_rng(seed)
    for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        name = ".".join(map(str, path))
        if "norm" in name:
            value = np.ones(var.shape)
        elif "bias" in name:
            value = np.zeros(var.shape)
        else:
            value = 0.02 * rng.standard_normal(var.shape)
        var.set_value(jnp.asarray(value, jnp.float32))
    return model


def save_tiny_model(directory, tokenizer, seed: int = 0, **overrides) -> Path:
    """`tiny_model` as an HF directory (config.json, model.safetensors, tokenizer files); returns it."""
    from agentrm_jax.models import save_pretrained

    directory = save_pretrained(tiny_model(seed, **overrides), directory)
    tokenizer.save_pretrained(str(directory))
    return directory


def trajectory(i: int, good: bool) -> Trajectory:
    """A one-step episode whose action reveals the outcome (north = success), so the data is separable.
    Rendered, every one is 57-58 tokens: one length bucket (64), one compiled step per run."""
    action = "go north" if good else "go south"
    steps = (Step("try", action, "a room"),)
    return Trajectory(task="maze", instruction=f"Find the key {i}.", steps=steps, id=str(i), success=good,
                      value=1.0 if good else 0.0, progress=0.5)


def write_trajectories(path, n: int = 16) -> Path:
    """n trajectories, alternating failure / success."""
    write_jsonl(path, [trajectory(i, bool(i % 2)) for i in range(n)])
    return Path(path)


def write_pairs(path, n: int = 8) -> Path:
    """n preference pairs: a successful episode chosen over a failed one."""
    write_jsonl(path, [PreferencePair(trajectory(2 * i + 1, True), trajectory(2 * i, False), str(i))
                       for i in range(n)])
    return Path(path)


def write_yaml(path, values: dict) -> Path:
    """A YAML config (JSON is YAML), one key per line."""
    path = Path(path)
    path.write_text("".join(f"{k}: {json.dumps(v)}\n" for k, v in values.items()), encoding="utf-8")
    return path


def subprocess_env(devices: int = 1) -> dict[str, str]:
    """The environment of a child python on CPU with `devices` fake devices (XLA_FLAGS must be set
    before jax initialises, so this pytest process, which has one, cannot host them)."""
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
    if devices > 1:
        flags.append(f"--xla_force_host_platform_device_count={devices}")
    env["XLA_FLAGS"] = " ".join(flags)
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def run_script(script: str, *args: str, devices: int = 1, timeout: float = 600) -> subprocess.CompletedProcess:
    """Runs `python -c script args...` in the repository root with `devices` fake CPU devices."""
    return subprocess.run([sys.executable, "-c", script, *args], cwd=REPO, env=subprocess_env(devices),
                          capture_output=True, text=True, timeout=timeout)


def result_line(proc: subprocess.CompletedProcess, tag: str = "RESULTS") -> dict:
    """The JSON a child printed after `tag` on a line of its own."""
    assert proc.returncode == 0, proc.stderr[-4000:]
    line = next((l for l in proc.stdout.splitlines() if l.startswith(tag)), None)
    assert line is not None, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(line[len(tag):])


def metrics_rows(out) -> list[dict]:
    path = Path(out) / "metrics.jsonl"
    return [json.loads(l) for l in path.read_text(encoding="utf-8").splitlines() if l.strip()]


def step_losses(out) -> list[tuple[int, float]]:
    """(step, loss) of every metrics.jsonl row, in file order."""
    return [(r["step"], r["loss"]) for r in metrics_rows(out) if "loss" in r]
