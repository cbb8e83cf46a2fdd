"""`agentrm score`: score a JSONL file of trajectories with any reward model kind.

Output rows are `{"id", "score", "step_scores"}` (NaN written as null: a step
cut by --max-length, or a judge answer that did not parse). Rows are appended
chunk by chunk and flushed, so an interrupted run resumes where it stopped:
ids already in the output are skipped, never written twice.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

__all__ = ["build_reward_model", "register", "score_file"]


def _clean(x: float) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def _existing_ids(path: Path) -> set[str]:
    """Ids already written to an output file; a torn last line (killed mid-write) is dropped."""
    if not path.exists():
        return set()
    ids, good_bytes = set(), 0
    with open(path, "rb") as f:
        for raw in f:
            try:
                ids.add(str(json.loads(raw)["id"]))
            except (json.JSONDecodeError, KeyError, UnicodeDecodeError):
                break
            good_bytes += len(raw)
    if good_bytes < path.stat().st_size:  # cut the torn tail so appends stay one object per line
        with open(path, "r+b") as f:
            f.truncate(good_bytes)
    return ids


def score_file(rm, input_path, output_path, *, chunk_size: int = 64, progress: bool = True) -> int:
    """Score every trajectory of `input_path` not yet in `output_path`; returns how many were scored now.

    Records without an id get their 0-based record number as id.
    """
    from agentrm_jax.agents.trajectory import append_jsonl, read_jsonl

    output_path = Path(output_path)
    trajectories = read_jsonl(input_path)  # validates every row (file:line errors) before any work
    trajectories = [t if t.id is not None else t.replace(id=str(i)) for i, t in enumerate(trajectories)]
    ids = [t.id for t in trajectories]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"{input_path}: id {dup!r} appears more than once; ids must be unique to resume safely")
    done = _existing_ids(output_path)
    todo = [t for t in trajectories if t.id not in done]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(trajectories), initial=len(trajectories) - len(todo), desc="scoring", unit="traj")
    for start in range(0, len(todo), chunk_size):
        chunk = todo[start:start + chunk_size]
        if hasattr(rm, "score_with_steps"):
            scores, steps = rm.score_with_steps(chunk)
        else:
            scores, steps = rm.score(chunk), rm.score_steps(chunk)
        append_jsonl(output_path, ({"id": t.id, "score": _clean(s), "step_scores": [_clean(x) for x in st]}
                                   for t, s, st in zip(chunk, scores, steps)))
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    return len(todo)


def build_reward_model(kind: str, *, rm: str | None = None, policy: str | None = None,
                       reference: str | None = None, judge: str | None = None, tokenizer: str | None = None,
                       batch_size: int = 8, max_length: int | None = 2048, beta: float = 0.05,
                       aggregate: str = "min", dtype: str = "float32", progress: bool = False):
    """A reward model from command-line style arguments (see `agentrm score --help`)."""
    from agentrm_jax.rewards.scoring import ExplicitRM, ImplicitPRM, ScoringConfig

    config = ScoringConfig(batch_size=batch_size, max_length=max_length, progress=progress)
    if kind == "explicit":
        if not rm:
            raise ValueError("--rm PATH is required for --rm-kind explicit (a training output directory or an "
                             "HF LlamaForSequenceClassification/Qwen2ForSequenceClassification directory)")
        from agentrm_jax.rewards.io import load_rm_tokenizer, load_value_model

        model, loss, _ = load_value_model(rm, dtype=dtype)
        return ExplicitRM(model, load_rm_tokenizer(rm, tokenizer), loss=loss, config=config)
    if kind == "implicit":
        if not policy or not reference:
            raise ValueError("--rm-kind implicit needs --policy PATH (the trained pi_theta) and --reference PATH "
                             "(the frozen pi_ref), each an HF directory or .gguf")
        from agentrm_jax.models import load_model, load_tokenizer

        return ImplicitPRM(load_model(policy, dtype=dtype), load_model(reference, dtype=dtype),
                           load_tokenizer(tokenizer or policy), beta=beta, aggregate=aggregate, config=config)
    if kind == "judge":
        if not judge:
            raise ValueError("--rm-kind judge needs --judge PATH|URL: a model (HF directory or .gguf, run "
                             "in-process; 'bundled' for the bundled SmolLM2) or an OpenAI-compatible base URL")
        from agentrm_jax.rewards.judge import PointwiseJudge

        return PointwiseJudge(_judge_policy(judge, dtype))
    raise ValueError(f"--rm-kind must be explicit, implicit or judge, got {kind!r}")


def _judge_policy(judge: str, dtype: str):
    if judge.startswith(("http://", "https://")):
        from agentrm_jax.agents.policies import OpenAIPolicy

        base, _, model = judge.partition("#")  # URL#model-name
        return OpenAIPolicy(base, model or "default")
    from agentrm_jax.agents.policies import JaxPolicy
    from agentrm_jax.models import bundled_model_path, from_pretrained

    model, tokenizer = from_pretrained(bundled_model_path() if judge == "bundled" else judge, dtype=dtype)
    return JaxPolicy(model, tokenizer)


def _cmd_score(args: argparse.Namespace) -> int:
    if not Path(args.input).exists():
        raise SystemExit(f"--input {args.input}: no such file (expected JSONL trajectories, one per line)")
    if args.batch_size < 1:
        raise SystemExit(f"--batch-size must be >= 1, got {args.batch_size}")
    rm = build_reward_model(args.rm_kind, rm=args.rm, policy=args.policy, reference=args.reference,
                            judge=args.judge, tokenizer=args.tokenizer, batch_size=args.batch_size,
                            max_length=args.max_length or None, beta=args.beta, aggregate=args.aggregate,
                            dtype=args.dtype)
    n = score_file(rm, args.input, args.output, chunk_size=max(args.batch_size * 8, 1))
    print(f"scored {n} trajectories -> {args.output}", file=sys.stderr)
    return 0


def register(subparsers) -> None:
    """Add `score` to the `agentrm` command."""
    p = subparsers.add_parser(
        "score", help="score trajectories (JSONL) with a reward model",
        description="Score each trajectory of --input (records {id, task, instruction, steps, ...}) and append "
                    "{id, score, step_scores} rows to --output. Rerunning resumes: ids already in --output are "
                    "skipped. Explicit RMs score a trajectory at its last token and a step at the end of its "
                    "action; implicit PRMs sum beta*log(pi/pi_ref) over each step's tokens; the judge asks a "
                    "model for a 0-10 progress rating.")
    p.add_argument("--rm", help="explicit RM directory: `agentrm train` output, or an HF "
                                "Llama/Qwen2ForSequenceClassification checkpoint with one label")
    p.add_argument("--input", required=True, help="JSONL trajectories")
    p.add_argument("--output", required=True, help="JSONL score rows (appended; resumable)")
    p.add_argument("--rm-kind", default="explicit", choices=["explicit", "implicit", "judge"])
    p.add_argument("--policy", help="implicit: the trained model pi_theta (HF dir or .gguf)")
    p.add_argument("--reference", help="implicit: the frozen reference pi_ref (HF dir or .gguf)")
    p.add_argument("--judge", help="judge: model path, 'bundled', or OpenAI-compatible URL (URL#model)")
    p.add_argument("--tokenizer", help="tokenizer source when the RM directory has none (HF dir or .gguf)")
    p.add_argument("--batch-size", type=int, default=8, help="trajectories per forward pass (default 8)")
    p.add_argument("--max-length", type=int, default=2048,
                   help="token budget; longer trajectories keep the instruction and latest steps (0 = none)")
    p.add_argument("--beta", type=float, default=0.05, help="implicit: reward scale beta (default 0.05)")
    p.add_argument("--aggregate", default="min", choices=["min", "sum", "last", "mean"],
                   help="implicit: how step rewards combine into the trajectory score (default min)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.set_defaults(func=_cmd_score)
