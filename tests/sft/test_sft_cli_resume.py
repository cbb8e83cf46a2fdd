"""`agentrm collect` -> `agentrm sft` through the CLI on a tiny model, and an SFT run SIGKILLed mid-way that
resumes to the per-step losses of an uninterrupted run, each step logged once, ending in the same policy.

The runs are child processes (a SIGKILL needs a process of its own); they share a persistent compilation
cache, so the later ones run the executable the first compiled.
"""

from __future__ import annotations

import hashlib
import re
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from sft_helpers import kill_after_step, sft_command, tiny_policy_dir, tiny_tokenizer  # noqa: E402
from trainer_helpers import REPO, step_losses, subprocess_env, write_yaml  # noqa: E402

from agentrm_jax.records import read_jsonl  # noqa: E402

STEPS = 5


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_collect_then_sft_resumes_after_sigkill_bit_exact(tmp_path):
    from agentrm_jax.cli import main
    from agentrm_jax.models.adapters import load_policy
    from agentrm_jax.models.lora import has_lora
    from agentrm_jax.training.checkpoint import Checkpointer

    demos = tmp_path / "demos.jsonl"
    assert main(["collect", "--policy", "expert", "--envs", "tool_query", "--split", "train", "--seeds", "0-3",
                 "--out", str(demos), "--no-progress"]) == 0
    trajectories = read_jsonl(demos)
    assert len(trajectories) == 4 and all(t.success and t.steps for t in trajectories)
    model = tiny_policy_dir(tmp_path / "model", tiny_tokenizer(trajectories))

    env = {**subprocess_env(), "JAX_COMPILATION_CACHE_DIR": str(tmp_path / "jax_cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    configs = {name: write_yaml(tmp_path / f"{name}.yaml", dict(
        model=str(model), kind="sft", finetune="lora", steps=STEPS, out=str(tmp_path / name),
        data=dict(train=str(demos), batch_size=2, max_length=1024), lora=dict(rank=2),
        optimizer=dict(lr=1e-2, warmup_steps=1), outputs=dict(save_every=1, log_every=1),
        sft=dict(eval_envs=[]))) for name in ("killed", "uninterrupted")}
    rc, stderr, at_kill = kill_after_step(sft_command(configs["killed"]), tmp_path / "killed" / "metrics.jsonl", 2,
                                          env=env, cwd=REPO)
    assert rc == -signal.SIGKILL, stderr[-2000:]
    assert 2 <= max(at_kill) < STEPS, at_kill  # killed mid-run
    assert not (tmp_path / "killed" / "policy").exists()
    with ThreadPoolExecutor(2) as pool:
        runs = {name: pool.submit(subprocess.run, sft_command(configs[name]), cwd=REPO, env=env,
                                  capture_output=True, text=True, timeout=300) for name in configs}
        done = {name: run.result() for name, run in runs.items()}
    for name, proc in done.items():
        assert proc.returncode == 0, (name, proc.stderr[-3000:])
    resumed_from = re.search(r"resumed from step (\d+),", done["killed"].stderr)
    assert resumed_from, done["killed"].stderr[-2000:]  # from a checkpoint, not from scratch
    assert 1 <= int(resumed_from.group(1)) <= max(at_kill)
    resumed, uninterrupted = step_losses(tmp_path / "killed"), step_losses(tmp_path / "uninterrupted")
    assert [s for s, _ in resumed] == list(range(1, STEPS + 1))  # every step logged exactly once
    assert resumed == uninterrupted  # bit-equal on CPU
    assert len({loss for _, loss in resumed}) == STEPS  # it trains: no two steps alike
    assert Checkpointer(tmp_path / "killed" / "checkpoints").latest_step() == STEPS
    adapters = [tmp_path / name / "policy" / "adapters.safetensors" for name in configs]
    assert _sha(adapters[0]) == _sha(adapters[1])  # the same policy, bit for bit
    assert has_lora(load_policy(tmp_path / "killed")[0])  # the run is a policy: base + adapters
