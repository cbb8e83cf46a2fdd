"""`run_sft`: policy fine-tuning on expert demos with the shared trainer, ending in a policy directory.

    run_sft(config, sft, ...) -> TrainResult

`training.trainer.train` does the work (mesh, grain batches, AdamW, orbax checkpoints with bit-exact
resume, metrics.jsonl, the non-finite stop): this adds its SFT data (`sft.data.load_sft_examples`
as `examples_fn`), the episode evaluation at eval points (`sft.episodes.EpisodeEval` as `evaluator`),
`sft_config.json` beside `train_config.json` (a resume under another sft section is refused), and at
the end `policy/` in the run directory: the adapters over the base (`models.adapters`, LoRA) or the
whole model (full), which `--policy RUN_DIR` loads everywhere a policy is accepted.
"""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Callable
from pathlib import Path

from agentrm_jax.runs import is_training_run
from agentrm_jax.sft.config import SFT_CONFIG_FILE, SFTSection

__all__ = ["run_sft", "write_policy"]


def _check_sft_section(out: Path, sft: SFTSection, overwrite: bool) -> None:
    saved = out / SFT_CONFIG_FILE
    if overwrite or not saved.is_file():
        return
    before = json.loads(saved.read_text())
    now = sft.to_dict()
    changed = [k for k in now if k in ("tasks", "successful_only") and before.get(k) != now[k]]
    if changed:
        k = changed[0]
        raise ValueError(f"{out} holds an sft run with sft.{k}={before.get(k)!r}, but this config has "
                         f"sft.{k}={now[k]!r}; resume with the same data, choose a new --out, or pass --overwrite")


def write_policy(config, sft: SFTSection, *, tokenizer, backbone=None) -> Path:
    """`policy/` of the run `config` describes, from its latest checkpoint (replaced whole; returns it)."""
    from agentrm_jax.models.adapters import POLICY_DIR, save_adapters
    from agentrm_jax.training.run_dir import CHECKPOINTS
    from agentrm_jax.training.trainer import trained_model

    out = Path(config.out)
    model, meta = trained_model(config, out / CHECKPOINTS, backbone=backbone)
    # a relative base path would name another file once the policy is used from another directory
    base = config.model if config.model == "bundled" or not Path(config.model).exists() else str(
        Path(config.model).resolve())
    tmp = out / f".{POLICY_DIR}.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    extra = {"step": meta.get("step"), "max_new_tokens": sft.max_new_tokens, "trained_by": "agentrm sft"}
    if config.finetune == "lora":
        # the fingerprint the checkpoint took of the base it trained on (None before fingerprints: taken now)
        save_adapters(model, tmp, base=base, rank=config.lora.rank, alpha=config.lora.alpha, extra=extra,
                      base_fingerprint=meta.get("base"))
    else:
        from agentrm_jax.models import save_pretrained

        save_pretrained(model, tmp)
        tokenizer.save_pretrained(str(tmp))
        (tmp / "policy.json").write_text(json.dumps(extra, indent=2))
    final = out / POLICY_DIR
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return final


def run_sft(config, sft: SFTSection, *, progress: bool = True, overwrite: bool = False, tokenizer=None,
            backbone_fn: Callable | None = None, on_step=None):
    """Train (or resume) the SFT run, then write its policy; returns the trainer's `TrainResult`.

    backbone_fn() -> a fresh LlamaForCausalLM (tests; default: loaded from config.model), called once
    for training and once for writing the policy.
    """
    from agentrm_jax.sft.data import load_sft_examples
    from agentrm_jax.training.trainer import resolve_model_path, train

    if config.kind != "sft":
        raise ValueError(f"run_sft trains kind 'sft', got {config.kind!r}")
    out = Path(config.out)
    _check_sft_section(out, sft, overwrite)
    if overwrite and is_training_run(out):  # elsewhere a policy/ is not ours to delete
        from agentrm_jax.models.adapters import POLICY_DIR

        # the old run's policy and sft section must not outlive it: a run that dies before its end would
        # leave `--policy RUN_DIR` loading the previous run's weights
        shutil.rmtree(out / POLICY_DIR, ignore_errors=True)
        (out / SFT_CONFIG_FILE).unlink(missing_ok=True)
    if tokenizer is None:
        from agentrm_jax.models import load_tokenizer

        tokenizer = load_tokenizer(resolve_model_path(config.model))
    examples_fn = functools.partial(load_sft_examples, tasks=sft.tasks, successful_only=sft.successful_only)
    evaluator = None
    if sft.eval_envs:
        from agentrm_jax.sft.episodes import EpisodeEval

        evaluator = EpisodeEval(sft.eval_envs, range(sft.eval_seeds), tokenizer, split=sft.eval_split,
                                max_turns=sft.eval_max_turns, max_new_tokens=sft.max_new_tokens)
    import jax

    writer = jax.process_index() == 0  # one host writes the run directory's files

    def step_hook(step: int, loss: float) -> None:
        if writer and not (out / SFT_CONFIG_FILE).is_file():  # once the run directory exists
            (out / SFT_CONFIG_FILE).write_text(json.dumps(sft.to_dict(), indent=2))
        if on_step is not None:
            on_step(step, loss)

    result = train(config, progress=progress, overwrite=overwrite, tokenizer=tokenizer, on_step=step_hook,
                   backbone=backbone_fn() if backbone_fn else None, examples_fn=examples_fn, evaluator=evaluator)
    if writer:
        write_policy(config, sft, tokenizer=tokenizer, backbone=backbone_fn() if backbone_fn else None)
    return result
