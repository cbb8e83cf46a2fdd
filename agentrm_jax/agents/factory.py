"""Factories the CLI and the evaluator share: `make_env` (an environment by name, importing its module on
first use) and `make_policy` (a policy from its CLI name: bundled, expert, random, a model path or an
OpenAI-compatible URL). Heavy parts (jax, the models) are imported only when a factory runs."""

from __future__ import annotations

import importlib

__all__ = ["check_drop_tokens", "check_kv_cache_mb", "make_env", "make_policy"]


def check_kv_cache_mb(value, where: str = "kv_cache_mb") -> float:
    """`value` as MB of prefix KV cache (0 = off), or a ValueError naming `where` (a key or a flag)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 or value == float("inf"):
        raise ValueError(f"{where} must be a number of MB >= 0 (0 turns the prefix KV cache off), got {value!r}")
    return float(value)


def check_drop_tokens(value, where: str = "drop_tokens", *, policy: str | None = None) -> int | None:
    """`value` as the block in tokens in which overlong contexts lose their oldest steps (None: the policy's
    default), or a ValueError naming `where` (a key or a flag); with `policy` (its CLI name), also refused
    for policies that would ignore it (expert, random, served)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{where} must be a number of tokens >= 1 (unset: a quarter of the model's window), "
                         f"got {value!r}")
    if policy is not None and (policy in ("expert", "random") or policy.startswith(("http://", "https://"))):
        raise ValueError(f"{where} applies to in-process model policies only; policy is {policy!r}: drop {where}")
    return value


def make_env(name: str, *, seed: int = 0, split: str = "train", **kwargs):
    """`envs.make`, importing `agentrm_jax.envs.<name>` first if it has not registered itself yet."""
    from agentrm_jax.envs import REGISTRY, make

    if name not in REGISTRY:
        try:
            importlib.import_module(f"agentrm_jax.envs.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"agentrm_jax.envs.{name}":
                raise
    return make(name, seed=seed, split=split, **kwargs)


def make_policy(spec: str, env=None, *, model: str | None = None, seed: int = 0, noise: float = 0.0,
                max_new_tokens: int = 96, timeout: float = 60.0, api_key_env: str = "OPENAI_API_KEY",
                kv_cache_mb: float = 0.0, concurrency: int = 1, drop_tokens: int | None = None):
    """A policy from its CLI name.

    bundled (our JAX model; `model` names another path), an offline model's name (`models.offline_models`:
    qwen2.5-coder-0.5b), expert / random (built for the task `env` is
    reset to; `env` is needed only for these two), an `agentrm sft` run directory (its policy/: base +
    LoRA adapters unmerged, or the whole fine-tuned model), a model path (an HF directory or a .gguf
    file, run in-process), or http(s)://URL[#model] (an OpenAI-compatible server; `#model` or `model` names the
    model, else the server's first). kv_cache_mb: our JAX policies' prefix KV cache budget in MB (0: off, the
    default; see docs/ARCHITECTURE.md); the other policies ignore it. concurrency: a served policy's requests
    in flight at once (the contexts of one call, e.g. a lockstep turn's; answers keep their order); the other
    policies ignore it. drop_tokens: our JAX policies' block for cutting overlong contexts (`JaxPolicy`; None:
    a quarter of the model's window); the other policies ignore it.
    """
    from pathlib import Path

    from agentrm_jax.agents.policies import JaxPolicy, OpenAIPolicy, RandomPolicy, ScriptedPolicy

    kv_cache_mb = check_kv_cache_mb(kv_cache_mb)
    jax_kwargs = {"max_new_tokens": max_new_tokens, "prefix_cache": kv_cache_mb > 0, "kv_cache_mb": kv_cache_mb,
                  "drop_tokens": check_drop_tokens(drop_tokens)}
    if spec in ("bundled", "jax", "model"):
        return JaxPolicy.from_pretrained(model, **jax_kwargs)
    if spec in ("expert", "random") and env is None:
        raise ValueError(f"policy {spec!r} is built for one task: pass an env reset to that task")
    if spec == "expert":
        return ScriptedPolicy.expert(env, noise=noise, seed=seed)
    if spec == "random":
        return RandomPolicy.for_env(env, seed=seed)
    if spec.startswith(("http://", "https://")):
        spec, _, named = spec.partition("#")
        model = model or named or None
        policy = OpenAIPolicy(spec, model or "default", api_key_env=api_key_env, timeout=timeout,
                              max_tokens=max_new_tokens, concurrency=concurrency)
        if model is None:  # ask the server which model it serves
            names = policy.models()
            policy.model = names[0] if names else "default"
        return policy
    from agentrm_jax.models.offline_models import OFFLINE_MODELS

    if spec in OFFLINE_MODELS:  # a larger model installed offline by name, e.g. qwen2.5-coder-0.5b
        return JaxPolicy.from_pretrained(spec, **jax_kwargs)
    path = Path(spec).expanduser()
    if path.is_dir() and ((path / "policy").is_dir() or (path / "adapters.json").is_file()
                          or (path / "train_config.json").is_file()):
        from agentrm_jax.models.adapters import load_policy  # an `agentrm sft` run (or its policy/)

        model, tokenizer = load_policy(path)
        return JaxPolicy(model, tokenizer, **jax_kwargs)
    if path.exists():
        return JaxPolicy.from_pretrained(str(path), **jax_kwargs)
    raise ValueError(f"--policy must be bundled, expert, random, {', '.join(OFFLINE_MODELS)}, an existing model "
                     f"path (HF directory or .gguf) or an http(s):// URL, got {spec!r}")
