"""`agentrm score`: score a JSONL file of trajectories with any reward model kind.

Output rows are `{"id", "score", "step_scores", "content"}` (NaN written as
null: a step cut by --max-length, or a judge answer that did not parse;
`content` is the `content_id` of the row that was scored). Rows are appended
chunk by chunk and flushed, so an interrupted run resumes where it stopped:
ids already in the output are skipped, never written twice, and an id whose
row changed since it was scored is refused rather than kept with a stale score.

Which reward model wrote an output is recorded beside it, in
`<output>.meta.json` (a sidecar, so every line of the output stays a score
row): `{"format_version", "kind", "max_length", "dtype", ...}` with the kind's
options (implicit: beta, aggregate) and, for each model the scores come from
(rm / policy / reference / judge / tokenizer), its path and a sha256 over its
weight, config and tokenizer files (a training run: over its latest checkpoint,
its train config and its base model). A rerun resumes only when that identity
is the same (paths aside: a moved directory holds the same RM); otherwise it
stops with one line naming what differs, and `--overwrite` starts over. An
output with rows but no sidecar is refused the same way: nothing says which
RM wrote it. An empty input still creates the (empty) output and its sidecar.

Ids: a row's own `id`, else `content_id` of the row: 16 hex digits of the
sha256 of its canonical JSON (keys sorted, no id), so a row keeps its id when
rows are added or removed around it. Two rows with the same id (identical rows
without ids among them) are refused: resuming by id needs unique ids.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
from pathlib import Path

__all__ = ["build_reward_model", "check_output", "content_id", "load_trajectories", "meta_path", "register",
           "rm_identity", "score_file"]

FORMAT_VERSION = 1  # bump when what a score means changes (v1: explicit step scores after the observation)
_MODEL_SUFFIXES = (".json", ".safetensors", ".gguf", ".model", ".txt", ".bin", ".tiktoken", ".jinja")
_META_SUFFIX = ".meta.json"


def _clean(x: float) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def meta_path(output_path) -> Path:
    """Where the identity of the reward model that wrote `output_path` is kept: `<output>.meta.json`."""
    output_path = Path(output_path)
    return output_path.with_name(output_path.name + _META_SUFFIX)


# ------------------------------------------------------------------------------------------ inputs


def content_id(trajectory) -> str:
    """A row's id from its content: 16 hex digits of sha256 over its canonical JSON (sorted keys, no id)."""
    record = trajectory.to_dict()
    record.pop("id", None)
    canonical = json.dumps(record, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def load_trajectories(input_path) -> list:
    """The trajectories of a JSONL file, each with an id (its own, else `content_id`); ids must be unique."""
    from agentrm_jax.records import iter_jsonl_lines

    out, first_line, own = [], {}, {}
    for line, t in iter_jsonl_lines(input_path):  # validates every row (file:line errors) before any work
        has_id = t.id is not None
        if not has_id:
            t = t.replace(id=content_id(t))
        if t.id in first_line:
            first = first_line[t.id]
            if not has_id and not own[t.id]:
                raise ValueError(f"{input_path}:{line}: this row appears more than once (identical to line {first}, "
                                 "neither has an id); give the rows distinct ids: ids must be unique to resume safely")
            raise ValueError(f"{input_path}:{line}: id {t.id!r} appears more than once (first on line {first}); "
                             "ids must be unique to resume safely")
        first_line[t.id], own[t.id] = line, has_id
        out.append(t)
    return out


def _check_paths(input_path, output_path) -> None:
    inp, out = Path(input_path), Path(output_path)
    same = inp.resolve() == out.resolve() or (out.exists() and inp.exists() and os.path.samefile(inp, out))
    if same:
        raise ValueError(f"--output {output_path} is the --input file; write the scores to another file")
    if out.resolve() == meta_path(inp).resolve() or inp.resolve() == meta_path(out).resolve():
        raise ValueError(f"--output {output_path}: the input and output must not be each other's {_META_SUFFIX}")


# ---------------------------------------------------------------------------------------- identity


def _file_sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _tree_sha256(root: Path, files) -> str:
    digest = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.relative_to(root).as_posix()):
        digest.update(f.relative_to(root).as_posix().encode() + b"\0" + _file_sha256(f).encode() + b"\n")
    return digest.hexdigest()


def fingerprint(path) -> str:
    """sha256 over a model file, or over the weight / config / tokenizer files at a directory's top level."""
    path = Path(path)
    if path.is_file():
        return _file_sha256(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: no such file or directory (expected a model directory or .gguf file)")
    files = [f for f in path.iterdir() if f.is_file() and f.name.endswith(_MODEL_SUFFIXES)
             and not f.name.endswith(_META_SUFFIX) and not f.name.startswith(".")]
    return _tree_sha256(path, files)


def _source(path) -> dict | None:
    """{"path", "sha256"} of a model path (a training run: its latest checkpoint); None for None."""
    if path is None:
        return None
    from agentrm_jax.rewards.io import training_run

    run = training_run(path)
    if run is not None:
        return _run_source(run)
    if str(path) == "bundled":
        from agentrm_jax.models import bundled_model_path

        path = bundled_model_path()
    return {"path": str(Path(path).resolve()), "sha256": fingerprint(path)}


def rm_identity(kind: str, *, rm=None, policy=None, reference=None, judge=None, tokenizer=None,
                max_length: int | None = 2048, beta: float = 0.05, aggregate: str = "min",
                dtype: str | None = None) -> dict:
    """What makes scores comparable: the kind, every option that changes a score and each model's files.

    Raises the same one-line errors as `build_reward_model` for missing arguments. batch_size is not
    part of it: scores do not depend on batching.
    """
    _check_kind_args(kind, rm=rm, policy=policy, reference=reference, judge=judge)
    identity = {"format_version": FORMAT_VERSION, "kind": kind, "max_length": max_length,
                "dtype": dtype or "float32"}
    if kind == "explicit":
        identity.update(rm=_source(rm), tokenizer=_source(tokenizer))
        identity["dtype"] = dtype or identity["rm"].get("dtype", "float32")  # a run: its training precision
    elif kind == "implicit":
        identity.update(policy=_source(policy), reference=_source(reference), tokenizer=_source(tokenizer),
                        beta=float(beta), aggregate=aggregate)
    else:
        identity.update(judge={"url": judge} if judge.startswith(("http://", "https://")) else _source(judge))
    return identity


def _without_paths(value):
    if isinstance(value, dict):
        return {k: _without_paths(v) for k, v in value.items() if k != "path"}
    return value


def _show(value) -> str:
    if isinstance(value, dict) and "sha256" in value:
        where = value.get("path") or value.get("url") or "?"
        return f"{where} (sha256 {value['sha256'][:12]}, step {value['step']})" if "step" in value else \
            f"{where} (sha256 {value['sha256'][:12]})"
    return json.dumps(value)


def _difference(recorded: dict, identity: dict) -> str | None:
    """The first field in which two identities differ (paths aside), as "field: was X, now Y"; None if same."""
    for key in sorted(set(recorded) | set(identity)):
        old, new = recorded.get(key), identity.get(key)
        if _without_paths(old) != _without_paths(new):
            return f"{key}: {_show(old)} wrote them, now {_show(new)}"
    return None


def check_output(output_path, identity: dict, *, overwrite: bool = False) -> None:
    """Refuse (ValueError, one line) to resume into an output that a different reward model wrote.

    An output with rows needs a sidecar (`meta_path`) whose identity matches `identity` apart from
    paths; with `overwrite` anything goes (the output will be started over).
    """
    output_path = Path(output_path)
    if overwrite or not output_path.exists() or output_path.stat().st_size == 0:
        return
    sidecar = meta_path(output_path)
    fix = "pass --overwrite to rescore from scratch, or choose another --output"
    if not sidecar.exists():
        raise ValueError(f"{output_path} holds scores but no {sidecar.name} says which reward model wrote them; {fix}")
    try:
        recorded = json.loads(sidecar.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{sidecar}: not valid JSON ({e}); {fix}") from None
    if not isinstance(recorded, dict):
        raise ValueError(f"{sidecar}: expected a JSON object describing the reward model; {fix}")
    difference = _difference(recorded, identity)
    if difference is not None:
        raise ValueError(f"{output_path} holds scores from a different reward model ({difference}); {fix}")


def _start_output(output_path: Path, identity: dict, overwrite: bool) -> None:
    """Create the output and its sidecar (or start both over); an output being resumed is left as is."""
    sidecar = meta_path(output_path)
    fresh = overwrite or not output_path.exists() or output_path.stat().st_size == 0
    if not fresh:
        return
    output_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = sidecar.with_name(sidecar.name + ".tmp")
    tmp.write_text(json.dumps(identity, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, sidecar)
    with open(output_path, "w", encoding="utf-8"):
        pass  # empty: rows are appended as they are scored


# ------------------------------------------------------------------------------------------ scoring


def _existing_rows(path: Path) -> dict[str, str | None]:
    """id -> the content hash it was scored from (None in outputs written before rows carried it), for the
    rows already in an output; a torn last line (killed mid-write) is cut, a malformed line elsewhere is
    a RecordError naming file:line (never silently dropped with everything after it)."""
    from agentrm_jax.records import RecordError, read_object_lines

    done = {}
    for line, row in read_object_lines(path, repair=True):
        if "id" not in row:
            raise RecordError("a score row without an id", path=str(path), line=line)
        done[str(row["id"])] = row.get("content")
    return done


def _score(rm, trajectories: list, output_path: Path, *, chunk_size: int, progress: bool) -> int:
    from agentrm_jax.records import append_jsonl

    done = _existing_rows(output_path)
    for t in trajectories:
        scored_from = done.get(t.id)
        if scored_from is not None and scored_from != content_id(t):
            raise ValueError(f"{output_path}: id {t.id!r} was scored from other content than the input holds now "
                             "(the row changed since); pass --overwrite to rescore everything, or give the "
                             "changed row a new id")
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
        append_jsonl(output_path, ({"id": t.id, "score": _clean(s), "step_scores": [_clean(x) for x in st],
                                    "content": content_id(t)}
                                   for t, s, st in zip(chunk, scores, steps)))
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    return len(todo)


def score_file(rm, input_path, output_path, *, identity: dict, overwrite: bool = False, chunk_size: int = 64,
               progress: bool = True) -> int:
    """Score every trajectory of `input_path` not yet in `output_path`; returns how many were scored now.

    identity: what `rm` is (`rm_identity`), recorded in `meta_path(output_path)`; resuming an output
      written by a different identity is refused unless `overwrite`, which starts the output over.
    Rows without an id get `content_id`. The output file exists afterwards, even for an empty input.
    """
    _check_paths(input_path, output_path)
    trajectories = load_trajectories(input_path)
    check_output(output_path, identity, overwrite=overwrite)
    output_path = Path(output_path)
    _start_output(output_path, identity, overwrite)
    return _score(rm, trajectories, output_path, chunk_size=chunk_size, progress=progress)


# ------------------------------------------------------------------------------------- reward models


def _check_kind_args(kind: str, *, rm=None, policy=None, reference=None, judge=None) -> None:
    if kind == "explicit" and not rm:
        raise ValueError("--rm PATH is required for --rm-kind explicit (an `agentrm export` output, a training "
                         "run directory, or an HF LlamaForSequenceClassification/Qwen2ForSequenceClassification "
                         "directory)")
    if kind == "implicit" and (not policy or not reference):
        raise ValueError("--rm-kind implicit needs --policy PATH (the trained pi_theta) and --reference PATH "
                         "(the frozen pi_ref), each an HF directory or .gguf")
    if kind == "judge" and not judge:
        raise ValueError("--rm-kind judge needs --judge PATH|URL: a model (HF directory or .gguf, run "
                         "in-process; 'bundled' for the bundled SmolLM2) or an OpenAI-compatible base URL")
    if kind not in ("explicit", "implicit", "judge"):
        raise ValueError(f"--rm-kind must be explicit, implicit or judge, got {kind!r}")
    from agentrm_jax.rewards.io import training_run, training_run_message

    for flag, path in (("--policy", policy), ("--reference", reference), ("--judge", judge)):
        if path and training_run(path) is not None:
            raise ValueError(f"{flag}: " + training_run_message(training_run(path)))


def _run_checkpoints(run: Path) -> tuple[Path, dict]:
    """(checkpoints directory, meta of its latest checkpoint) of a training run; one-line errors."""
    from agentrm_jax.training.checkpoint import read_meta
    from agentrm_jax.training.trainer import CHECKPOINTS

    ckpt = run / CHECKPOINTS
    if not ckpt.is_dir():
        raise ValueError(f"{run} is a training run with no checkpoint yet ({ckpt} is missing); let `agentrm "
                         "train` save one, then score it")
    try:
        meta = read_meta(ckpt)
    except FileNotFoundError:
        raise ValueError(f"{run} is a training run with no complete checkpoint in {ckpt}; let `agentrm train` "
                         "save one, then score it") from None
    if "config" not in meta:
        raise ValueError(f"{ckpt}: the latest checkpoint's metadata has no 'config'; was it written by "
                         "`agentrm train`?")
    return ckpt, meta


def _run_source(run: Path) -> dict:
    """Identity of a training run's latest checkpoint: its files, its train config and its base model."""
    from agentrm_jax.training.trainer import resolve_model_path

    ckpt, meta = _run_checkpoints(run)
    step = int(meta["step"]) if "step" in meta else None
    step_dir = ckpt / str(step) if step is not None and (ckpt / str(step)).is_dir() else ckpt
    digest = hashlib.sha256(_tree_sha256(step_dir, [f for f in step_dir.rglob("*") if f.is_file()]).encode())
    digest.update(json.dumps(meta["config"], sort_keys=True).encode())
    digest.update(fingerprint(resolve_model_path(meta["config"]["model"])).encode())
    dtype = "bfloat16" if meta["config"].get("precision") == "bf16" else "float32"
    return {"path": str(run.resolve()), "step": step, "sha256": digest.hexdigest(), "dtype": dtype}


def _load_run(run: Path, dtype: str | None):
    """(value model, loss, tokenizer) of a training run's latest checkpoint, restored by the trainer's code."""
    from agentrm_jax.models import load_tokenizer
    from agentrm_jax.rewards.io import training_run_message
    from agentrm_jax.training.config import TrainConfig
    from agentrm_jax.training.trainer import resolve_model_path, trained_model

    ckpt, meta = _run_checkpoints(run)
    config = TrainConfig.from_dict(meta["config"], source=f"{ckpt} (checkpoint meta)")
    if config.kind == "implicit":
        raise ValueError(training_run_message(run) + " with --rm-kind implicit --policy DIR --reference "
                         f"{config.model} (an implicit PRM's run is a policy, not a value head)")
    run_dtype = "bfloat16" if config.precision == "bf16" else "float32"
    if dtype not in (None, run_dtype):
        raise ValueError(f"--dtype {dtype}: a training run scores in the precision it was trained in "
                         f"({run_dtype}, TrainConfig.precision={config.precision!r}); drop --dtype, or export "
                         f"the run (`agentrm export --ckpt {run} --out {run / 'hf'}`) and score that")
    model, _ = trained_model(config, ckpt)
    loss = config.loss if config.kind == "explicit" else "mse"  # a BT-trained head outputs an unbounded score
    return model, loss, load_tokenizer(resolve_model_path(config.model))


def build_reward_model(kind: str, *, rm: str | None = None, policy: str | None = None,
                       reference: str | None = None, judge: str | None = None, tokenizer: str | None = None,
                       batch_size: int = 8, max_length: int | None = 2048, beta: float = 0.05,
                       aggregate: str = "min", dtype: str | None = None, progress: bool = False):
    """A reward model from command-line style arguments (see `agentrm score --help`).

    rm may be a training run directory of `agentrm train`: its latest checkpoint is restored in memory
    (as `agentrm export` would write it). dtype None: float32, or a run's own training precision.
    """
    from agentrm_jax.rewards.scoring import ExplicitRM, ImplicitPRM, ScoringConfig

    _check_kind_args(kind, rm=rm, policy=policy, reference=reference, judge=judge)
    config = ScoringConfig(batch_size=batch_size, max_length=max_length, progress=progress)
    if kind == "explicit":
        from agentrm_jax.rewards.io import load_rm_tokenizer, load_value_model, training_run

        run = training_run(rm)
        if run is not None:
            model, loss, run_tokenizer = _load_run(run, dtype)
            if tokenizer:
                from agentrm_jax.models import load_tokenizer

                run_tokenizer = load_tokenizer(tokenizer)
            return ExplicitRM(model, run_tokenizer, loss=loss, config=config)
        model, loss, _ = load_value_model(rm, dtype=dtype or "float32")
        return ExplicitRM(model, load_rm_tokenizer(rm, tokenizer), loss=loss, config=config)
    if kind == "implicit":
        from agentrm_jax.models import load_model, load_tokenizer

        dtype = dtype or "float32"
        return ImplicitPRM(load_model(policy, dtype=dtype), load_model(reference, dtype=dtype),
                           load_tokenizer(tokenizer or policy), beta=beta, aggregate=aggregate, config=config)
    from agentrm_jax.rewards.judge import PointwiseJudge

    return PointwiseJudge(_judge_policy(judge, dtype or "float32"))


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
    _check_paths(args.input, args.output)
    trajectories = load_trajectories(args.input)
    options = dict(rm=args.rm, policy=args.policy, reference=args.reference, judge=args.judge,
                   tokenizer=args.tokenizer, max_length=args.max_length or None, beta=args.beta,
                   aggregate=args.aggregate, dtype=args.dtype)
    identity = rm_identity(args.rm_kind, **options)
    check_output(args.output, identity, overwrite=args.overwrite)  # before the (slow) model load
    rm = build_reward_model(args.rm_kind, batch_size=args.batch_size, **options)
    output = Path(args.output)
    _start_output(output, identity, args.overwrite)
    n = _score(rm, trajectories, output, chunk_size=max(args.batch_size * 8, 1), progress=True)
    print(f"scored {n} trajectories -> {args.output}", file=sys.stderr)
    return 0


def register(subparsers) -> None:
    """Add `score` to the `agentrm` command."""
    p = subparsers.add_parser(
        "score", help="score trajectories (JSONL) with a reward model",
        description="Score each trajectory of --input (records {id, task, instruction, steps, ...}) and append "
                    "{id, score, step_scores} rows to --output; --output.meta.json records which reward model "
                    "wrote them. Rerunning with the same RM resumes (ids already in --output are skipped); with "
                    "a different one it stops unless --overwrite. Rows without an id get a hash of their "
                    "content. Explicit RMs score a trajectory at its last token and step i where the prefix of "
                    "its first i+1 steps ends (after step i's observation: step i's score is that prefix's "
                    "score); implicit PRMs sum beta*log(pi/pi_ref) over each step's tokens; the judge asks a "
                    "model for a 0-10 progress rating.")
    p.add_argument("--rm", help="explicit RM: an `agentrm export` directory, an `agentrm train` run directory "
                                "(its latest checkpoint), or an HF Llama/Qwen2ForSequenceClassification "
                                "checkpoint with one label")
    p.add_argument("--input", required=True, help="JSONL trajectories")
    p.add_argument("--output", required=True, help="JSONL score rows (appended; resumable with the same RM)")
    p.add_argument("--overwrite", action="store_true",
                   help="start --output over (its rows and .meta.json) instead of resuming; needed when it "
                        "holds scores of a different reward model")
    p.add_argument("--rm-kind", default="explicit", choices=["explicit", "implicit", "judge"])
    p.add_argument("--policy", help="implicit: the trained model pi_theta (HF dir or .gguf)")
    p.add_argument("--reference", help="implicit: the frozen reference pi_ref (HF dir or .gguf)")
    p.add_argument("--judge", help="judge: model path, 'bundled', or OpenAI-compatible URL (URL#model)")
    p.add_argument("--tokenizer", help="tokenizer source when the RM directory has none (HF dir or .gguf)")
    p.add_argument("--batch-size", type=int, default=8, help="trajectories per forward pass (default 8)")
    p.add_argument("--max-length", type=int, default=2048,
                   help="token budget; longer trajectories keep the instruction and latest steps, or only "
                        "their last tokens when even that does not fit (0 = none)")
    p.add_argument("--beta", type=float, default=0.05, help="implicit: reward scale beta (default 0.05)")
    p.add_argument("--aggregate", default="min", choices=["min", "sum", "last", "mean"],
                   help="implicit: how step rewards combine into the trajectory score (default min)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"],
                   help="compute dtype (default float32; a training run: the precision it was trained in)")
    p.set_defaults(func=_cmd_score)
