"""The RM trainer end to end on a tiny random model: mesh-shape invariance on 8 fake devices, mesh and
dimension errors before compiling, kill-and-resume bit-equality through `agentrm train`, the stop on a
non-finite loss, input errors, gradient accumulation, and the implicit PRM's start at log 2.

Two jobs run in subprocesses: 8 fake CPU devices need XLA_FLAGS before jax initialises, and a SIGKILL needs a
process of its own. Both start in the background when the module starts, so they share the machine's cores
with the in-process tests instead of queuing behind them (the file takes ~2 minutes of CPU).
"""

from __future__ import annotations

import json
import math
import re
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import jax
import numpy as np
import pytest

from agentrm_jax.training import trainer
from agentrm_jax.training.checkpoint import Checkpointer
from agentrm_jax.training.config import MeshShape, TrainConfig
from agentrm_jax.training.trainer import NonFiniteError, train, trained_model
from trainer_helpers import (REPO, metrics_rows, result_line, run_script, save_tiny_model, step_losses,
                             subprocess_env, tiny_model, write_pairs, write_trajectories, write_yaml)

HERE = Path(__file__).resolve().parent
MESHES = [(1, 1, 1), (1, 8, 1), (2, 2, 2), (8, 1, 1)]

# ---------------------------------------------------------------------------------- background jobs

MESH_SCRIPT = textwrap.dedent("""
    import json, sys
    import jax
    sys.path.insert(0, sys.argv[1])
    from trainer_helpers import tiny_model, write_trajectories
    from agentrm_jax.models import bundled_model_path, load_tokenizer
    from agentrm_jax.training import trainer
    from agentrm_jax.training.config import MeshShape, TrainConfig
    from agentrm_jax.training.mesh import training_mesh

    assert jax.device_count() == 8, jax.devices()
    out, runs = sys.argv[2], json.loads(sys.argv[3])
    tokenizer = load_tokenizer(bundled_model_path())
    data = str(write_trajectories(f"{out}/train.jsonl", 16))

    class RecordingStep(trainer.TrainStep):
        # keeps the parameters the jitted step returned last, to read their placement
        last = None

        def step(self, trainable, opt_state, batch):
            result = super().step(trainable, opt_state, batch)
            RecordingStep.last = result[0]
            return result

    trainer.TrainStep = RecordingStep
    every_device = trainer.training_mesh

    def config(finetune, shape, name):
        return TrainConfig(train=data, kind="explicit", finetune=finetune, lora_rank=2, steps=3, batch_size=8,
                           lr=1e-2, warmup_steps=1, max_length=64, mesh=MeshShape(*shape), out=f"{out}/{name}",
                           save_every=100)

    results = {}
    for finetune, shape in runs:
        # train() builds its mesh over every device; the 1-device reference gets the first one only.
        trainer.training_mesh = ((lambda s: training_mesh(s, devices=jax.devices()[:1])) if shape == [1, 1, 1]
                                 else every_device)
        name = finetune + "_" + "x".join(map(str, shape))
        result = trainer.train(config(finetune, shape, name), backbone=tiny_model(), tokenizer=tokenizer,
                               progress=False)
        params = {jax.tree_util.keystr(path, simple=True, separator=".").removesuffix(".value"): array
                  for path, array in jax.tree_util.tree_leaves_with_path(RecordingStep.last)}
        results[name] = dict(
            losses=[result.losses[s] for s in sorted(result.losses)],
            specs={k: [None if a is None else (list(a) if isinstance(a, tuple) else a) for a in v.sharding.spec]
                   for k, v in params.items()},
            shard_shapes={k: list(v.addressable_shards[0].data.shape) for k, v in params.items()},
            devices={k: len(v.sharding.device_set) for k, v in params.items()})

    # embed 44 does not divide fsdp=8: refused when the parameters are placed on the mesh.
    trainer.training_mesh = every_device
    try:
        trainer.train(config("full", [1, 8, 1], "odd"), backbone=tiny_model(hidden_size=44),
                      tokenizer=tokenizer, progress=False)
        results["odd_error"] = None
    except ValueError as err:
        results["odd_error"] = str(err)
    print("RESULTS" + json.dumps(results))
""")


def _mesh_job(out: Path) -> dict:
    runs = [("full", list(s)) for s in MESHES]
    return result_line(run_script(MESH_SCRIPT, str(HERE), str(out), json.dumps(runs), devices=8))


def _train_command(config: Path) -> list[str]:
    return [sys.executable, "-m", "agentrm_jax.cli", "train", "--config", str(config), "--no-progress"]


def _cached_env(cache: Path) -> dict[str, str]:
    # The three runs compile the same step: a persistent compilation cache lets the later ones skip it
    # (and so run the very same executable).
    return {**subprocess_env(), "JAX_COMPILATION_CACHE_DIR": str(cache),
            "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}


def _logged_steps(metrics: Path) -> list[int]:
    if not metrics.exists():
        return []
    return [json.loads(line)["step"] for line in metrics.read_text().splitlines() if line.endswith("}")]


def _resume_job(root: Path, model: Path, data: Path) -> dict:
    """Run A is SIGKILLed once step 2 is logged, then rerun to the end; run B goes uninterrupted."""
    root.mkdir(parents=True, exist_ok=True)
    env = _cached_env(root / "jax_cache")
    configs = {}
    for name in ("killed", "uninterrupted"):
        configs[name] = write_yaml(root / f"{name}.yaml", dict(
            model=str(model), kind="explicit", finetune="lora", steps=5, out=str(root / name),
            data=dict(train=str(data), batch_size=4, max_length=64), lora=dict(rank=2),
            optimizer=dict(lr=1e-2, warmup_steps=1), outputs=dict(save_every=1, log_every=1)))
    metrics = root / "killed" / "metrics.jsonl"
    first = subprocess.Popen(_train_command(configs["killed"]), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while first.poll() is None and time.monotonic() < deadline:
        if any(step >= 2 for step in _logged_steps(metrics)):
            first.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    first_stderr = first.communicate(timeout=60)[1]
    logged_at_kill = _logged_steps(metrics)
    with ThreadPoolExecutor(2) as pool:  # both reuse the cached compile
        runs = {name: pool.submit(subprocess.run, _train_command(configs[name]), cwd=REPO, env=env,
                                  capture_output=True, text=True, timeout=300)
                for name in ("killed", "uninterrupted")}
        done = {name: run.result() for name, run in runs.items()}
    return dict(first_rc=first.returncode, first_stderr=first_stderr, logged_at_kill=logged_at_kill,
                resumed=done["killed"], uninterrupted=done["uninterrupted"], out=root)


@pytest.fixture(scope="module")
def pool():
    with ThreadPoolExecutor(2) as executor:
        yield executor


@pytest.fixture(scope="module")
def files(tmp_path_factory, bundled_tokenizer):
    """Shared inputs: a tiny HF model directory (with the bundled tokenizer) and JSONL data."""
    root = tmp_path_factory.mktemp("trainer")
    return dict(root=root, model=save_tiny_model(root / "model", bundled_tokenizer),
                trajectories=write_trajectories(root / "trajectories.jsonl", 16),
                eight=write_trajectories(root / "eight.jsonl", 8),  # one batch: every step sees them all
                pairs=write_pairs(root / "pairs.jsonl", 8))


@pytest.fixture(scope="module")
def mesh_runs(pool, tmp_path_factory):
    return pool.submit(_mesh_job, tmp_path_factory.mktemp("meshes"))


@pytest.fixture(scope="module")
def resume_runs(pool, files):
    return pool.submit(_resume_job, files["root"] / "resume", files["model"], files["trajectories"])


@pytest.fixture(scope="module", autouse=True)
def _start_background_jobs(request):
    """Start the subprocess jobs the selected tests need before any test runs."""
    wanted = {name for item in request.session.items if item.module is request.module for name in item.fixturenames}
    for name in ("mesh_runs", "resume_runs"):
        if name in wanted:
            request.getfixturevalue(name)


# ------------------------------------------------------------------------------------------ helpers


def config(files, name: str, **overrides) -> TrainConfig:
    values = dict(train=str(files["trajectories"]), kind="explicit", finetune="lora", lora_rank=2, steps=2,
                  batch_size=8, lr=1e-2, warmup_steps=0, max_length=64, save_every=100,
                  out=str(files["root"] / name))
    values.update(overrides)
    return TrainConfig(**values)


def run(files, bundled_tokenizer, name: str, **overrides):
    return train(config(files, name, **overrides), backbone=tiny_model(), tokenizer=bundled_tokenizer,
                 progress=False)


# --------------------------------------------------------------------------- errors before training


def test_a_mesh_larger_than_the_machine_fails_before_anything_is_built(files, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("train() went past the mesh check")

    for name in ("load_examples", "build_model", "TrainStep"):
        monkeypatch.setattr(trainer, name, never)
    n = jax.device_count()
    with pytest.raises(ValueError, match=rf"needs 4 devices but {n} are available") as err:
        train(config(files, "too_big", mesh=MeshShape(2, 2, 1)), progress=False)
    assert "data=2,fsdp=2,tensor=1" in str(err.value)
    assert not (files["root"] / "too_big").exists()


def test_a_missing_train_file_names_the_path_and_the_field(files, bundled_tokenizer):
    missing = files["root"] / "nowhere.jsonl"
    with pytest.raises(FileNotFoundError) as err:
        train(config(files, "missing", train=str(missing)), tokenizer=bundled_tokenizer, progress=False)
    assert str(missing) in str(err.value) and ".train " in str(err.value)


def test_a_malformed_record_names_the_file_and_line(files, bundled_tokenizer):
    bad = files["root"] / "bad.jsonl"
    lines = files["trajectories"].read_text().splitlines()
    bad.write_text("\n".join(lines[:2] + ['{"task": "maze", "instruction": oops}'] + lines[2:]) + "\n")
    with pytest.raises(ValueError, match=re.escape(f"{bad}:3:")):
        train(config(files, "bad", train=str(bad)), tokenizer=bundled_tokenizer, progress=False)


def test_an_unknown_yaml_key_names_the_file_and_line(files):
    path = files["root"] / "typo.yaml"
    path.write_text(f"data:\n  train: {files['trajectories']}\nsteps: 2\noptimizer:\n  learning_rate: 0.1\n")
    with pytest.raises(ValueError, match=re.escape(f"{path}:5: unknown key 'learning_rate'")):
        TrainConfig.from_yaml(path)


def test_a_yaml_exponent_without_a_dot_is_a_number(files):
    path = files["root"] / "exponent.yaml"
    # PyYAML reads these as strings
    path.write_text(f"data:\n  train: {files['trajectories']}\noptimizer:\n  lr: 1e-4\nobjective:\n  beta: 5e-2\n")
    loaded = TrainConfig.from_yaml(path)
    assert (loaded.lr, loaded.beta) == (1e-4, 5e-2)


def test_resuming_with_a_changed_lr_is_refused(files, bundled_tokenizer, accumulation):
    first = accumulation["explicit"][1].out
    changed = config(files, first.name, lr=5e-3)
    with pytest.raises(ValueError, match=r"lr=0\.01.*lr=0\.005"):
        train(changed, backbone=tiny_model(), tokenizer=bundled_tokenizer, progress=False)


# ---------------------------------------------------------------------------- gradient accumulation


@pytest.fixture(scope="module")
def accumulation(files, bundled_tokenizer):
    """{kind: {grad_accum: TrainResult}} for 2 steps of explicit (LoRA) and pairwise (head only)."""
    runs = {"explicit": {}, "pairwise": {}}
    for accum in (1, 2):
        runs["explicit"][accum] = run(files, bundled_tokenizer, f"explicit_ga{accum}", grad_accum=accum)
        runs["pairwise"][accum] = run(files, bundled_tokenizer, f"pairwise_ga{accum}", kind="pairwise",
                                      finetune="head", train=str(files["pairs"]), batch_size=4, grad_accum=accum)
    return runs


@pytest.mark.parametrize("kind", ["explicit", "pairwise"])
def test_gradient_accumulation_matches_one_big_batch(accumulation, kind):
    one, two = accumulation[kind][1].losses, accumulation[kind][2].losses
    assert sorted(one) == sorted(two) == [1, 2]
    assert one[1] == pytest.approx(two[1], rel=1e-6, abs=0)  # same rows, summed in another order
    assert one[2] == pytest.approx(two[2], rel=0, abs=1e-5)  # the accumulated gradient gave the same update
    assert one[2] != one[1]


# ------------------------------------------------------------------------------------- implicit PRM


def test_implicit_lora_starts_at_log_2_and_learns(files, bundled_tokenizer):
    result = run(files, bundled_tokenizer, "implicit", kind="implicit", train=str(files["eight"]), steps=4, beta=1.0,
                 lr=1e-4)
    losses = [result.losses[s] for s in sorted(result.losses)]
    # Zero-initialised B: the policy is the reference, every reward 0, BCE(0, y) = log 2. Within 2 ulp, not
    # bit-exact: in the compiled value-and-grad program XLA fuses the policy's forward (whose activations the
    # backward pass keeps) differently from the reference's, and a row's reward can come out ~1e-6.
    assert losses[0] == pytest.approx(math.log(2), rel=0, abs=1.2e-7), losses
    # every step sees the same 8 records (north = success), and a small lr: the loss goes down each step
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < losses[0] - 1e-3, losses


def test_head_init_mean_starts_at_the_targets_mean(files, bundled_tokenizer):
    # eight: values alternate 0 and 1, mean 0.5. A head with zero weights and bias 0.5 predicts 0.5 for every
    # record, so the first step's loss is exactly 0.25; a normal head's first loss is whatever it draws.
    result = run(files, bundled_tokenizer, "head_mean", train=str(files["eight"]), finetune="head", head_init="mean",
                 steps=3, lr=1e-2)
    losses = [result.losses[s] for s in sorted(result.losses)]
    assert losses[0] == pytest.approx(0.25, abs=1e-6), losses
    assert losses[-1] < losses[0], losses  # and it learns from there (the actions separate the outcomes)
    normal = run(files, bundled_tokenizer, "head_normal", train=str(files["eight"]), finetune="head", steps=1)
    assert abs(normal.losses[min(normal.losses)] - 0.25) > 1e-3
    model, _ = trained_model(config(files, "head_mean", train=str(files["eight"]), finetune="head",
                                    head_init="mean", steps=3, lr=1e-2), files["root"] / "head_mean" / "checkpoints",
                             backbone=tiny_model())
    assert model.head.config.bias
    assert float(model.head.bias[...][0]) == pytest.approx(0.5, abs=0.1)  # moved from 0.5 by a few small steps
    # an MLP head starts the same way (its output layer zeroed), and BCE starts at the mean's logit (0: log 2)
    mlp = run(files, bundled_tokenizer, "head_mean_mlp", train=str(files["eight"]), finetune="head",
              head_init="mean", head_mlp=8, steps=1)
    assert mlp.losses[min(mlp.losses)] == pytest.approx(0.25, abs=1e-6)
    bce = run(files, bundled_tokenizer, "head_mean_bce", train=str(files["eight"]), finetune="head",
              head_init="mean", loss="bce", steps=1)
    assert bce.losses[min(bce.losses)] == pytest.approx(math.log(2), abs=1e-6)
    with pytest.raises(ValueError, match="head_init"):
        config(files, "pairwise_mean", kind="pairwise", train=str(files["pairs"]), head_init="mean")
    with pytest.raises(ValueError, match="head_init"):
        config(files, "bad_init", head_init="zeros")


def test_a_run_saved_before_head_init_resumes_only_as_normal(files):
    # its train_config.json has no head_init: it was trained with a normal head, which a mean start cannot resume
    saved = config(files, "old_run", finetune="head").to_dict()
    del saved["head_init"]
    trainer._check_resumable(saved, config(files, "old_run", finetune="head"), files["root"] / "old_run")
    with pytest.raises(ValueError, match="head_init='normal'.*head_init='mean'"):
        trainer._check_resumable(saved, config(files, "old_run", finetune="head", head_init="mean"),
                                 files["root"] / "old_run")


# ---------------------------------------------------------------------------------- non-finite loss


def test_a_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(files, bundled_tokenizer):
    cfg = config(files, "nan", finetune="head", lr=1e30, steps=4, save_every=1)
    with pytest.raises(NonFiniteError) as err:
        train(cfg, backbone=tiny_model(), tokenizer=bundled_tokenizer, progress=False)
    match = re.match(r"step (\d+): (the loss|the gradient of \S+) is not finite", str(err.value))
    assert match, str(err.value)
    bad = int(match.group(1))
    assert bad in (2, 3)  # step 1 starts from finite weights; lr=1e30 wrecks them
    assert f"last good checkpoint is step {bad - 1}" in str(err.value)
    with Checkpointer(files["root"] / "nan" / "checkpoints") as ckpt:
        assert ckpt.latest_step() == bad - 1
    model, meta = trained_model(cfg, files["root"] / "nan" / "checkpoints", backbone=tiny_model())
    assert meta["step"] == bad - 1
    head = np.asarray(model.head.weight[...])
    assert np.all(np.isfinite(head)) and np.abs(head).max() > 1e20  # the huge step was applied, and finite
    assert [row["step"] for row in metrics_rows(files["root"] / "nan")] == list(range(1, bad))


def test_the_cli_reports_a_non_finite_loss(files, capsys):
    from agentrm_jax.cli import main

    # lr 1e30 in YAML: PyYAML reads it as the string "1e+30"; the config takes it as a number
    path = write_yaml(files["root"] / "nan.yaml", dict(
        model=str(files["model"]), kind="explicit", finetune="head", steps=4, out=str(files["root"] / "nan_cli"),
        data=dict(train=str(files["trajectories"]), batch_size=8, max_length=64),
        optimizer=dict(lr=1e30, warmup_steps=0), outputs=dict(save_every=1)))
    code = main(["train", "--config", str(path), "--no-progress"])
    stderr = capsys.readouterr().err
    assert code not in (0, None), stderr
    assert re.search(r"step [23]: (the loss|the gradient of \S+) is not finite", stderr), stderr


# ------------------------------------------------------ subprocess jobs: kill and resume, 8 devices


def test_a_killed_run_resumes_to_the_same_losses(resume_runs):
    r = resume_runs.result()
    assert r["first_rc"] == -signal.SIGKILL, r["first_stderr"][-2000:]
    assert 2 <= max(r["logged_at_kill"]) < 5, r["logged_at_kill"]  # killed mid-run, after step 2
    for name in ("resumed", "uninterrupted"):
        assert r[name].returncode == 0, r[name].stderr[-3000:]
    resumed_from = re.search(r"resumed from step (\d+),", r["resumed"].stderr)
    assert resumed_from, r["resumed"].stderr[-2000:]  # it restarted from a checkpoint, not from scratch
    assert 1 <= int(resumed_from.group(1)) <= max(r["logged_at_kill"])
    resumed, uninterrupted = step_losses(r["out"] / "killed"), step_losses(r["out"] / "uninterrupted")
    assert [s for s, _ in resumed] == [1, 2, 3, 4, 5]  # every step logged exactly once
    assert resumed == uninterrupted  # bit-equal on CPU
    assert Checkpointer(r["out"] / "killed" / "checkpoints").all_steps() == [3, 4, 5]


def test_losses_do_not_depend_on_the_mesh(mesh_runs):
    results = mesh_runs.result()
    reference = results["full_1x1x1"]["losses"]
    assert len(reference) == 3 and len(set(reference)) == 3, reference  # it trains
    for shape in MESHES[1:]:
        losses = results["full_" + "x".join(map(str, shape))]["losses"]
        np.testing.assert_allclose(losses, reference, rtol=0, atol=1e-5, err_msg=str(shape))


def test_trained_parameters_stay_sharded(mesh_runs):
    results = mesh_runs.result()
    fsdp = results["full_1x8x1"]
    # (vocab, embed) = (49152, 48): embed split 8 ways over fsdp, every device holds a slice
    assert fsdp["specs"]["backbone.embed"] == ["tensor", "fsdp"]
    assert fsdp["shard_shapes"]["backbone.embed"] == [49152, 6]
    assert fsdp["devices"]["backbone.embed"] == 8
    q = "backbone.layers.0.attn.q_proj"
    mixed = results["full_2x2x2"]  # (heads, head_dim, embed) = (4, 12, 48) over tensor=2, fsdp=2
    assert mixed["specs"][q] == ["tensor", None, "fsdp"] and mixed["shard_shapes"][q] == [2, 12, 24]
    assert results["full_1x1x1"]["devices"]["backbone.embed"] == 1


def test_a_dimension_the_mesh_does_not_divide_names_the_parameter(mesh_runs):
    err = mesh_runs.result()["odd_error"]
    assert err is not None and "embed=44" in err and "divisible" in err and "fsdp" in err
    assert re.match(r"^\S*embed\S*: ", err), err  # the parameter's name leads the message
