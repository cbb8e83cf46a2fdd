"""Benchmark: explicit-RM scoring throughput, ours vs transformers+torch (a benchmark, not a test).

    PYTHONPATH=. python scripts/bench_rewards.py                  # 64 trajectories, batch 8
    agentrm bench rewards --count 32 --repeats 3 --json out.json

Both sides score the same trajectories with the same weights: the bundled
SmolLM2-135M backbone plus one linear value head at each trajectory's last
token (float32, `--threads` torch threads, one process so machine noise hits
both alike).

- ours: `ExplicitRM.score` (render, sort by length, bucketed shapes, jitted
  forward, step scores too), timed after a warm-up call that compiles;
- torch (natural): the same rendered token ids in input order, batches of
  `--batch` right-padded to the batch's longest row, `model.model(...)` then the
  head on the last real token: what a straightforward torch scorer does;
- torch (sorted): the same but batches made of length-sorted trajectories, to
  show how much of the difference is bucketing rather than the forward itself.

Rendering (chat template + tokenization) is included in ours and excluded from
torch's timings (torch gets pre-tokenized tensors), so the ratio is
conservative. Trajectory lengths are drawn from a wide range (1-12 steps)
like the prefixes that beam search scores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench_rewards.py", description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=64, help="trajectories scored per call")
    p.add_argument("--batch", type=int, default=8, help="trajectories per forward pass")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per side")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-torch", action="store_true", help="time ours only")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    return p


def make_trajectories(count: int, seed: int):
    from agentrm_jax.records import Step, Trajectory

    rng = np.random.default_rng(seed)
    words = ("the red key is in the room north of the hall you see a door a box and a table "
             "pick up open go to move east west south").split()

    def text(lo, hi):
        return " ".join(rng.choice(words, int(rng.integers(lo, hi))))

    return [Trajectory("bench", "Your task: " + text(10, 40),
                       tuple(Step(text(3, 15), "go to " + text(1, 3), text(5, 30))
                             for _ in range(int(rng.integers(1, 13)))), id=str(i)) for i in range(count)]


def _time(fn, repeats: int) -> list[float]:
    fn()  # warm-up (compiles on our side)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    from agentrm_jax.models import bundled_model_path, from_pretrained, to_hf_state_dict
    from agentrm_jax.rewards import ExplicitRM, ScoringConfig, ValueModel

    model, tokenizer = from_pretrained(bundled_model_path())
    value_model = ValueModel.create(model, seed=0)
    rm = ExplicitRM(value_model, tokenizer, config=ScoringConfig(batch_size=args.batch, max_length=None))
    trajectories = make_trajectories(args.count, args.seed)
    rendered = rm.scorer.render(trajectories)
    lengths = np.array([r.length for r in rendered])
    tokens = int(lengths.sum())
    print(f"{args.count} trajectories, {tokens} tokens (length {lengths.min()}-{lengths.max()}, "
          f"mean {lengths.mean():.0f}), batch {args.batch}", file=sys.stderr)

    ours_scores = rm.score(trajectories)
    t_ours = _time(lambda: rm.score(trajectories), args.repeats)
    result = {"count": args.count, "tokens": tokens, "batch": args.batch,
              "ours_s": min(t_ours), "ours_traj_per_s": args.count / min(t_ours),
              "ours_tokens_per_s": tokens / min(t_ours),
              "ours_padding_overhead": rm.scorer.tokens_padded / max(rm.scorer.tokens_scored, 1)}

    if not args.skip_torch:
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.set_num_threads(args.threads)
        hf = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in model.config.to_hf_config().items()
                                             if k != "architectures"}))
        hf.load_state_dict({k: torch.from_numpy(v) for k, v in to_hf_state_dict(model).items()}, strict=False)
        hf = hf.eval()
        head = torch.from_numpy(np.asarray(value_model.head.weight[...], np.float32))  # [1, D]

        def torch_scores(order):
            out = np.zeros(args.count, np.float32)
            for start in range(0, args.count, args.batch):
                idx = order[start:start + args.batch]
                width = int(lengths[idx].max())
                ids = np.full((len(idx), width), tokenizer.pad_token_id, np.int64)
                mask = np.zeros((len(idx), width), np.int64)
                for row, i in enumerate(idx):
                    ids[row, :lengths[i]] = rendered[i].input_ids
                    mask[row, :lengths[i]] = 1
                with torch.no_grad():
                    hidden = hf.model(input_ids=torch.from_numpy(ids),
                                      attention_mask=torch.from_numpy(mask)).last_hidden_state
                    last = torch.from_numpy(lengths[idx] - 1)
                    out[idx] = (hidden[torch.arange(len(idx)), last] @ head.T)[:, 0].numpy()
            return out

        natural = np.arange(args.count)
        by_length = np.argsort(-lengths, kind="stable")
        diff = float(np.abs(torch_scores(natural) - ours_scores).max())
        t_nat = _time(lambda: torch_scores(natural), args.repeats)
        t_sorted = _time(lambda: torch_scores(by_length), args.repeats)
        result.update(torch_natural_s=min(t_nat), torch_sorted_s=min(t_sorted),
                      torch_natural_traj_per_s=args.count / min(t_nat),
                      torch_sorted_traj_per_s=args.count / min(t_sorted),
                      ratio_vs_natural=min(t_nat) / min(t_ours), ratio_vs_sorted=min(t_sorted) / min(t_ours),
                      max_abs_score_diff=diff)

    print(f"ours          {result['ours_traj_per_s']:8.2f} traj/s {result['ours_tokens_per_s']:9.1f} tok/s "
          f"(best of {args.repeats}; median {statistics.median(t_ours):.2f} s; "
          f"padding x{result['ours_padding_overhead']:.2f})")
    if not args.skip_torch:
        print(f"torch natural {result['torch_natural_traj_per_s']:8.2f} traj/s  -> ours is "
              f"{result['ratio_vs_natural']:.2f}x")
        print(f"torch sorted  {result['torch_sorted_traj_per_s']:8.2f} traj/s  -> ours is "
              f"{result['ratio_vs_sorted']:.2f}x")
        print(f"max |score difference| ours vs torch: {result['max_abs_score_diff']:.2e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
