"""How long the policy's contexts grew in eval rows, and which ones were cut to fit the model's window.

    PYTHONPATH=. python scripts/context_lengths.py results/eval_split_baseline.jsonl [--envs pddl sciworld]

Re-renders every turn's context of every row the way the in-process policy saw it (`build_messages`
over the steps so far, one-shot, the model's chat template) and counts its tokens. A context over the
window's budget (max_position_embeddings - max_new_tokens) was cut by `JaxPolicy` (oldest steps in blocks
of `drop_tokens`, docs/ARCHITECTURE.md), so this says whether a change to the cut could have touched a
row. Prints one line per env: episodes, turns, the longest context, and the contexts and episodes cut.
Rows of the expert, random and served policies are skipped. The budget uses --max-new-tokens, not each
row's own setting (a label such as `bundled(max_new_tokens=64)` means pass --max-new-tokens 64).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("rows", help="eval rows JSONL (`agentrm eval`)")
    p.add_argument("--envs", nargs="+", default=None, help="only these envs (default: every env in the rows)")
    p.add_argument("--model", default=None, help="model whose tokenizer and window to use (default: bundled)")
    p.add_argument("--max-new-tokens", type=int, default=96, help="the eval's max_new_tokens (default 96)")
    args = p.parse_args(argv)

    from agentrm_jax.agents.policies import JaxPolicy
    from agentrm_jax.agents.prompts import build_messages
    from agentrm_jax.records import Trajectory

    policy = JaxPolicy.from_pretrained(args.model, max_new_tokens=args.max_new_tokens)
    budget = policy.max_positions - policy.max_new_tokens
    stats: dict[str, dict] = collections.defaultdict(lambda: {"episodes": 0, "turns": 0, "longest": 0,
                                                              "cut_contexts": 0, "cut_episodes": 0})
    with open(args.rows) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            env = row.get("env", "?")
            label = str(row.get("policy", ""))
            if (args.envs and env not in args.envs) or label.startswith(("expert", "random", "http")):
                continue  # the scripted policies see no prompt; a served one tokenizes on its side
            trajectory = Trajectory.from_dict(row["trajectory"], where=f"{args.rows}:{line_no}")
            s = stats[env]
            s["episodes"] += 1
            cut_here = 0
            for turn in range(len(trajectory.steps)):
                messages = build_messages(trajectory.replace(steps=trajectory.steps[:turn]),
                                          env_name=trajectory.task, one_shot=True)
                tokens = len(policy.sampler.encode(messages))
                s["turns"] += 1
                s["longest"] = max(s["longest"], tokens)
                cut_here += tokens > budget
            s["cut_contexts"] += cut_here
            s["cut_episodes"] += cut_here > 0
    print(f"window budget: {budget} tokens ({policy.max_positions} positions - max_new_tokens "
          f"{policy.max_new_tokens})")
    print("| env | episodes | turns | longest context (tokens) | contexts cut | episodes cut |")
    print("|---|---|---|---|---|---|")
    for env, s in stats.items():
        print(f"| {env} | {s['episodes']} | {s['turns']} | {s['longest']} | {s['cut_contexts']} | "
              f"{s['cut_episodes']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
