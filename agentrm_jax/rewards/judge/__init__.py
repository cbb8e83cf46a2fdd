"""LLM-as-a-judge reward models: a language model is asked about a trajectory and its answer is the reward.

Three judges, each a `RewardModel` (`score` -> float32 [N], `score_steps` ->
one float32 array per trajectory, the score of each prefix steps[:i+1]):

- `PointwiseJudge(policy)` (`pointwise.py`): any `PolicySampler` (in-process
  JAX model, an OpenAI-compatible server, a scripted fake) is shown the task
  and the steps and asked for a 0-10 progress rating; the reply is parsed with
  `parse_score` and the reward is rating / 10 (mean over the parsed samples
  when n > 1). An unparseable reply is never fatal: its score is NaN,
  `failures` counts it and the raw text stays in `last_outputs` / `last_records`.
- `LogitJudge(model, tokenizer)` (`logit.py`): an in-process causal LM is asked
  a yes/no question; one jitted forward pass reads the next-token distribution
  at the start of the answer and the reward is P(Yes) / (P(Yes) + P(No)), each
  side summed over its spellings ("Yes", " Yes", "yes", ...). No sampling, no parsing.
- `ListwiseJudge(policy)` (`listwise.py`): the candidates for one task are
  shown together, numbered, and the judge names the best (`parse_choice`). Its
  scores are 1.0 for the pick and 0.0 for the rest, so they are comparable only
  among the trajectories of one call; when the reply cannot be parsed every
  candidate gets 0.5.

The transcript a judge sees (`render_transcript`, `transcripts.py`, with the
prompt templates) holds the instruction and, for each step, its thought,
action and observation. Outcome fields (success, progress, value) are never
shown. Reply parsing is in `parsing.py`; `JudgeRecord` and the helpers the
judges share in `common.py`.
"""

from agentrm_jax.lazy_exports import lazy_exports

# public name -> the submodule that defines it (imported on first use, so the parsers and the
# sampling judges do not pull in jax: see lazy_exports)
_EXPORTS = {
    "DEFAULT_LOGIT_QUESTION": "transcripts",
    "JudgeRecord": "common",
    "ListwiseJudge": "listwise",
    "LogitJudge": "logit",
    "PointwiseJudge": "pointwise",
    "compile_counts": "logit",
    "parse_choice": "parsing",
    "parse_score": "parsing",
    "render_transcript": "transcripts",
    # importable from here as before, though not in __all__
    "LISTWISE_TEMPLATE": "transcripts",
    "LOGIT_TEMPLATE": "transcripts",
    "Messages": "transcripts",
    "NO_WORDS": "logit",
    "POINTWISE_TEMPLATE": "transcripts",
    "YES_WORDS": "logit",
    "answer_token_ids": "logit",
}
__all__ = [
    "DEFAULT_LOGIT_QUESTION", "JudgeRecord", "ListwiseJudge", "LogitJudge", "PointwiseJudge",
    "compile_counts", "parse_choice", "parse_score", "render_transcript",
]
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
