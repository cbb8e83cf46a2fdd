"""Benchmark: explicit-RM train-step throughput, ours vs torch, and FSDP memory per device (not a test).

    PYTHONPATH=. python scripts/bench_train.py                      # 4 x 256, 5 timed steps per side
    PYTHONPATH=. python scripts/bench_train.py --steps 8 --skip-memory --json out.json
    PYTHONPATH=. python scripts/bench_train.py --remat none,full --steps 3 --skip-memory   # remat off and on

1. Speed, in one process so machine noise hits both sides alike. Both sides train the
   explicit RM (bundled SmolLM2-135M backbone + linear value head [1, hidden], value read at
   each row's last real token, MSE to a target), full fine-tuning, float32, on one fixed
   right-padded batch of rendered trajectories:
   - ours: `training.trainer.TrainStep` (`build_model` + `make_optimizer`) on a 1x1x1 mesh,
     the jitted, donated step the trainer runs; with `--remat none,full` one such step per policy
     (`compute.remat`), each with its own copy of the model, all timed in the same rotation;
   - torch: transformers' `LlamaModel` loaded from the same GGUF (`gguf_file=`, transformers'
     own dequantization) + `Linear(hidden, 1, bias=False)` holding our head's initial weight,
     `torch.optim.AdamW` (default implementation) with the same lr, betas, eps, decoupled weight
     decay on matrices only, and `clip_grad_norm_` to the same global norm.
   Constant learning rate (no warmup, min_lr_ratio 1). Steps alternate ours / torch (the order
   rotates every round), each timed alone to the loss on the host after `--pause` idle seconds (torch's
   OpenMP workers spin-wait after a step and would otherwise take cores from ours); the first step of each side
   (ours: trace + compile) is reported apart. Losses of both sides are compared at every step:
   step 1 checks the forward is the same computation, later steps that the updates are.
2. Memory, in a subprocess with 8 fake CPU devices: the same model placed by `TrainStep` on a
   data=1,fsdp=1,tensor=1 mesh over one device and on data=1,fsdp=8,tensor=1 over eight;
   bytes of the parameter (trainable + frozen) and AdamW-state shards that live on device 0.
3. `--plan-check` (alone): `agentrm train --plan`'s per-device bytes for the bundled model, full
   fine-tuning at fsdp=8 (unrolled; scanned + remat full), next to the compiled step's memory analysis
   on 8 fake CPU devices.

Threads: torch uses `--threads` intra-op threads; XLA:CPU uses every core the process may run
on (2 on the development machine, so keep --threads at the core count for a fair ratio).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

# sibling scripts: synthetic trajectories (bench_rewards) and the forward FLOP count (bench_models)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_models import forward_flops_per_token  # noqa: E402
from bench_rewards import make_trajectories  # noqa: E402

_MEMORY_FLAG = "--memory-child"
_PLAN_FLAG = "--plan-child"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench_train.py", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=5, help="timed train steps per side (after one warm-up step)")
    p.add_argument("--batch", type=int, default=4, help="rows per step")
    p.add_argument("--length", type=int, default=256, help="padded row length (rows are rendered to at most this)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--lr", type=float, default=1e-5)
    p.add_argument("--pause", type=float, default=1.0,
                   help="seconds of idle before each timed step, so the other side's spinning threads have stopped")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--remat", default="none",
                   help="comma-separated compute.remat policies for our side (none, full, dots_saveable), each "
                        "timed as its own side against the same torch step, e.g. none,full")
    p.add_argument("--skip-speed", action="store_true", help="memory part only")
    p.add_argument("--skip-memory", action="store_true", help="speed part only")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.add_argument(_MEMORY_FLAG, action="store_true", help=argparse.SUPPRESS)
    return p


def train_config(args, *, batch_size: int, fsdp: int = 1, remat: str = "none"):
    from agentrm_jax.training.config import MeshShape, TrainConfig

    # `train` is never read here: the batch is built by hand. Constant lr: no warmup, no decay.
    return TrainConfig(model="bundled", kind="explicit", train="unused.jsonl", finetune="full",
                       batch_size=batch_size, max_length=args.length, steps=1000, lr=args.lr, warmup_steps=0,
                       min_lr_ratio=1.0, weight_decay=0.01, b1=0.9, b2=0.999, grad_clip=1.0,
                       precision="float32", mesh=MeshShape(fsdp=fsdp), seed=args.seed, remat=remat)


def make_batch(tokenizer, config, rows: int, length: int, seed: int) -> dict[str, np.ndarray]:
    """One right-padded [rows, length] batch in the trainer's layout (`training.data.collate`):
    rendered synthetic trajectories (chat template + tokenizer), target = value at the last token."""
    from agentrm_jax.rewards.rendering import render_for_rm
    from agentrm_jax.training.data import collate

    rng = np.random.default_rng(seed)
    candidates = iter(make_trajectories(64 * rows, seed))
    examples = []
    for i in range(rows):
        # row i fills length, 7/8, 3/4 or 5/8 of it (render_for_rm drops the oldest steps of a
        # long trajectory to fit): real text, some right padding, a known number of real tokens
        budget = length - (i % 4) * length // 8
        r = next(r for r in (render_for_rm(t, tokenizer, max_length=budget) for t in candidates)
                 if r.length > budget - 32)
        examples.append({"input_ids": r.input_ids.astype(np.int32), "agent_mask": r.agent_mask.astype(bool),
                         "target_index": np.asarray([r.length - 1], np.int32),
                         "target": np.asarray([rng.uniform()], np.float32), "label": np.asarray(0.0, np.float32),
                         "truncated": np.asarray(r.truncated)})
    return collate(examples, config.data_config(), batch_rows=rows, length=length)


def train_flops_per_token(cfg, length: int) -> float:
    """3 x forward FLOPs (forward + two backward products) of the backbone, no LM head."""
    return 3.0 * (forward_flops_per_token(cfg, length) - 2.0 * cfg.vocab_size * cfg.hidden_size)


# ------------------------------------------------------------------------------------------- speed


def speed(args) -> dict:
    import jax
    import torch
    from transformers import AutoModelForCausalLM

    from agentrm_jax.models import bundled_model_path, load_model, load_tokenizer
    from agentrm_jax.training.config import MeshShape
    from agentrm_jax.training.mesh import training_mesh
    from agentrm_jax.training.trainer import TrainStep, build_model

    torch.set_num_threads(args.threads)
    path = bundled_model_path()
    config = train_config(args, batch_size=args.batch)
    tokenizer = load_tokenizer(path)
    host_batch = make_batch(tokenizer, config, args.batch, args.length, args.seed)
    real_tokens = int(host_batch["attention_mask"].sum())
    padded_tokens = host_batch["input_ids"].size
    row_lengths = host_batch["attention_mask"].sum(1).tolist()
    result_load = [os.getloadavg()[0]]
    print(f"batch {args.batch} x {args.length}: {real_tokens} real tokens (rows {row_lengths}), "
          f"XLA devices {jax.devices()}, torch threads {torch.get_num_threads()}", file=sys.stderr)

    policies = [p.strip() for p in args.remat.split(",") if p.strip()]
    models = {}
    for policy in policies:  # one model per side: each step donates its own arrays
        models[policy] = build_model(train_config(args, batch_size=args.batch, remat=policy),
                                     backbone=load_model(path, dtype="float32"))
    model = models[policies[0]][0]
    head_weight = np.array(model.head.weight[...], np.float32)  # [1, D], copied before donation
    flops = train_flops_per_token(model.backbone.config, args.length)

    # torch: the same GGUF through transformers' own loader, plus our initial head.
    lm = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    backbone = lm.model.train()
    head = torch.nn.Linear(head_weight.shape[1], 1, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(head_weight))
    params = list(backbone.parameters()) + list(head.parameters())
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": config.weight_decay},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=config.lr, betas=(config.b1, config.b2), eps=1e-8)
    t_ids = torch.from_numpy(host_batch["input_ids"].astype(np.int64))
    t_mask = torch.from_numpy(host_batch["attention_mask"].astype(np.int64))
    t_index = torch.from_numpy(host_batch["target_index"][:, 0].astype(np.int64))
    t_target = torch.from_numpy(host_batch["targets"][:, 0])
    rows = torch.arange(args.batch)

    def torch_step() -> float:
        opt.zero_grad(set_to_none=True)
        hidden = backbone(input_ids=t_ids, attention_mask=t_mask, use_cache=False).last_hidden_state
        scores = head(hidden)[..., 0][rows, t_index]
        loss = torch.mean(torch.square(scores - t_target))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        opt.step()
        return float(loss.detach())

    mesh = training_mesh(MeshShape(), devices=jax.devices()[:1])
    steps, sides = {}, {}

    def ours(policy):
        m, trainable_filter = models.pop(policy)
        step = steps[policy] = TrainStep(m, trainable_filter, train_config(args, batch_size=args.batch, remat=policy),
                                         mesh, total_steps=config.steps)
        state = [step.initial_trainable, step.init_opt_state(step.initial_trainable)]
        batch = step.put_batch(host_batch)

        def ours_step() -> float:
            state[0], state[1], metrics = step.step(state[0], state[1], batch)
            return float(metrics["loss"])
        return ours_step

    names = {policy: "ours" if len(policies) == 1 else f"ours[remat={policy}]" for policy in policies}
    for policy in policies:
        sides[names[policy]] = ours(policy)
    sides["torch"] = torch_step
    del model  # its arrays may be the donated ones

    def timed(fn):
        time.sleep(args.pause)  # torch's OpenMP workers spin for a while after a step; let them sleep first
        t0 = time.perf_counter()
        loss = fn()
        return time.perf_counter() - t0, loss

    first, losses, times = {}, {}, {name: [] for name in sides}
    for name, fn in sides.items():
        first[name], loss = timed(fn)
        losses[name] = [loss]
    order = list(sides)
    for i in range(args.steps):
        for name in order[i % len(order):] + order[:i % len(order)]:
            dt, loss = timed(sides[name])
            times[name].append(dt)
            losses[name].append(loss)
        print(f"step {i + 2}: " + ", ".join(f"{name} {times[name][-1]:.2f} s" for name in order), file=sys.stderr)

    result_load.append(os.getloadavg()[0])
    med = {k: statistics.median(v) for k, v in times.items()}
    ours_names = [names[p] for p in policies]
    rel = {name: [abs(a - b) / max(abs(b), 1e-12) for a, b in zip(losses[name], losses["torch"])]
           for name in ours_names}
    lead = ours_names[0]
    result = {"batch": args.batch, "length": args.length, "real_tokens": real_tokens, "padded_tokens": padded_tokens,
              "steps": args.steps, "threads": args.threads, "remat": policies, "sides": order,
              "compiles": {names[p]: steps[p].compile_count() for p in policies},
              "first_step_s": first,
              "compile_s_estimate": {name: first[name] - med[name] for name in ours_names},
              "step_s": times, "median_step_s": med,
              "tokens_per_s": {k: real_tokens / v for k, v in med.items()},
              "gflops_per_s_padded": {k: flops * padded_tokens / v / 1e9 for k, v in med.items()},
              "ratio_over_torch": {name: med["torch"] / med[name] for name in ours_names},
              "ratio_ours_over_torch": med["torch"] / med[lead],
              "load_average_1min": result_load, "losses": losses,
              "loss_rel_diff_step1": rel[lead][0], "loss_rel_diff_max": max(rel[lead]),
              "loss_rel_diff": {name: {"step1": r[0], "max": max(r)} for name, r in rel.items()}}
    return result


# ------------------------------------------------------------------------------------------ memory


def _bytes_on(tree, device) -> int:
    import jax

    total = 0
    for leaf in jax.tree.leaves(tree):
        if isinstance(leaf, jax.Array):
            total += sum(s.data.nbytes for s in leaf.addressable_shards if s.device == device)
    return total


def memory_child(args) -> dict:
    """Runs with 8 fake CPU devices (XLA_FLAGS set by the parent before jax is imported)."""
    import jax

    from agentrm_jax.models import bundled_model_path, load_model
    from agentrm_jax.training.config import MeshShape
    from agentrm_jax.training.mesh import training_mesh
    from agentrm_jax.training.trainer import TrainStep, build_model

    devices = jax.devices()
    if len(devices) != 8:
        raise SystemExit(f"memory part needs 8 devices, got {len(devices)}: XLA_FLAGS was not applied")
    out = {}
    for fsdp in (1, 8):
        config = train_config(args, batch_size=8, fsdp=fsdp)
        model, trainable_filter = build_model(config, backbone=load_model(bundled_model_path(), dtype="float32"))
        mesh = training_mesh(MeshShape(fsdp=fsdp), devices=devices[:fsdp])
        step = TrainStep(model, trainable_filter, config, mesh, total_steps=config.steps)
        del model
        opt_state = step.init_opt_state(step.initial_trainable)
        dev0 = devices[0]
        params = _bytes_on(step.initial_trainable, dev0) + _bytes_on(step.frozen, dev0)
        optimizer = _bytes_on(opt_state, dev0)
        replicated = []
        for leaf in jax.tree.leaves(step.initial_trainable):
            if isinstance(leaf, jax.Array) and leaf.sharding.is_fully_replicated and fsdp > 1:
                replicated.append(leaf.nbytes)
        out[f"fsdp={fsdp}"] = {"params_bytes": params, "optimizer_bytes": optimizer, "total_bytes": params + optimizer,
                               "replicated_param_bytes": sum(replicated), "replicated_params": len(replicated)}
        del step, opt_state
    out["ratio_fsdp8_over_fsdp1"] = out["fsdp=8"]["total_bytes"] / out["fsdp=1"]["total_bytes"]
    return out


def plan_child(overrides: dict) -> dict:
    """`agentrm train --plan`'s per-device bytes next to the real ones on 8 fake CPU devices: the bundled
    model in configs/train_cpu.yaml with `overrides`, the real TrainStep compiled for one batch; real =
    its memory analysis (arguments + outputs - donated aliases + temporaries) on one device."""
    import jax
    import numpy as np

    from agentrm_jax.training.config import TrainConfig
    from agentrm_jax.training.mesh import training_mesh
    from agentrm_jax.training.model import build_model
    from agentrm_jax.training.plan import memory_plan
    from agentrm_jax.training.step import TrainStep

    config = TrainConfig.from_yaml(os.path.join(os.path.dirname(__file__), "..", "configs", "train_cpu.yaml"),
                                   overrides)
    plan = memory_plan(config)
    mesh = training_mesh(config.mesh)
    model, trainable_filter = build_model(config, mesh=mesh)
    step = TrainStep(model, trainable_filter, config, mesh, total_steps=10)
    del model
    opt_state = step.init_opt_state(step.initial_trainable)
    rows, length = config.data.batch_size * config.data.rows_per_example, plan.length
    host = {"input_ids": np.ones((rows, length), np.int32), "attention_mask": np.ones((rows, length), bool),
            "agent_mask": np.ones((rows, length), bool), "target_index": np.full((rows, 1), length - 1, np.int32),
            "targets": np.zeros((rows, 1), np.float32), "labels": np.zeros((rows,), np.float32),
            "weights": np.ones((rows,), np.float32)}
    ma = step.lower_step(step.initial_trainable, opt_state, step.put_batch(host)).compile().memory_analysis()
    real = ma.argument_size_in_bytes + ma.output_size_in_bytes - ma.alias_size_in_bytes + ma.temp_size_in_bytes
    dev0 = jax.devices()[0]
    return {"overrides": overrides, "plan": plan.to_dict(), "real_bytes": real, "real_temp_bytes": ma.temp_size_in_bytes,
            "real_params_and_opt_bytes": _bytes_on(step.initial_trainable, dev0) + _bytes_on(step.frozen, dev0)
            + _bytes_on(opt_state, dev0), "plan_over_real": plan.per_device_bytes / real}


def plan_check(args) -> list[dict]:
    """plan_child for full fine-tuning at fsdp=8, unrolled and scanned + remat, in subprocesses."""
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip())
    rows = []
    for extra in ({}, {"remat": "full", "scan_layers": True}):
        overrides = {"finetune": "full", "mesh": "data=1,fsdp=8,tensor=1", **extra}
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), _PLAN_FLAG, json.dumps(overrides)],
                              env=env, capture_output=True, text=True)
        if proc.returncode:
            raise RuntimeError(f"plan subprocess failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        r = rows[-1]
        print(f"{json.dumps(extra) or 'unrolled'}: plan {_mb(r['plan']['per_device_bytes'])}, real {_mb(r['real_bytes'])}"
              f" (temp {_mb(r['real_temp_bytes'])}); plan / real = {r['plan_over_real']:.3f}", flush=True)
    return rows


def memory(args) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
    env["JAX_PLATFORMS"] = "cpu"
    cmd = [sys.executable, os.path.abspath(__file__), _MEMORY_FLAG, "--length", str(args.length),
           "--seed", str(args.seed)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"memory subprocess failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------- report


def _mb(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB"


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [_PLAN_FLAG]:
        print(json.dumps(plan_child(json.loads(argv[1]))))
        return {}
    if argv[:1] == ["--plan-check"]:
        return {"plan_check": plan_check(None)}
    args = build_parser().parse_args(argv)
    if args.memory_child:
        print(json.dumps(memory_child(args)))
        return {}
    result = {}
    if not args.skip_speed:
        s = result["speed"] = speed(args)
        cols = s["sides"]
        width = max(12, *(len(c) + 2 for c in cols))
        print(f"\ntrain step, explicit RM, full fine-tuning, float32, batch {s['batch']} x {s['length']} "
              f"({s['real_tokens']} real tokens), median of {s['steps']} steps per side")
        print(f"{'':28}" + "".join(f"{c:>{width}}" for c in cols))
        for label, key, fmt in (("first step, s", "first_step_s", ".2f"), ("median step, s", "median_step_s", ".2f"),
                                ("tokens/s (real)", "tokens_per_s", ".1f"),
                                ("GFLOP/s (padded)", "gflops_per_s_padded", ".1f")):
            print(f"{label:28}" + "".join(f"{s[key][c]:>{width}{fmt}}" for c in cols))
        for name, ratio in s["ratio_over_torch"].items():
            diff = s["loss_rel_diff"][name]
            print(f"{name}: {ratio:.2f}x torch (tokens/s); compile ~{s['compile_s_estimate'][name]:.1f} s; programs "
                  f"compiled: {s['compiles'][name]}; loss rel. difference to torch: step 1 {diff['step1']:.1e}, max "
                  f"over {s['steps'] + 1} steps {diff['max']:.1e} ({s['losses'][name][0]:.6f} -> "
                  f"{s['losses'][name][-1]:.6f})")
        print(f"1-minute load average at start / end: {s['load_average_1min'][0]:.1f} / "
              f"{s['load_average_1min'][1]:.1f} (other processes share the cores)")
    if not args.skip_memory:
        m = result["memory"] = memory(args)
        print("\nper-device (device 0) bytes, parameters + AdamW state, bundled model, 8 fake CPU devices")
        print(f"{'mesh':28}{'params':>14}{'optimizer':>14}{'total':>14}")
        for key in ("fsdp=1", "fsdp=8"):
            row = m[key]
            print(f"{'data=1,' + key + ',tensor=1':28}{_mb(row['params_bytes']):>14}{_mb(row['optimizer_bytes']):>14}"
                  f"{_mb(row['total_bytes']):>14}")
        print(f"ratio fsdp=8 / fsdp=1: {m['ratio_fsdp8_over_fsdp1']:.4f} (1/{1 / m['ratio_fsdp8_over_fsdp1']:.2f}); "
              f"replicated at fsdp=8: {m['fsdp=8']['replicated_params']} parameters, "
              f"{_mb(m['fsdp=8']['replicated_param_bytes'])}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
