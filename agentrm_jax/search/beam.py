"""Step-level beam search: each turn every live beam proposes K steps, the RM keeps the best W.

    turn t:  W live beams --policy (one context each, n=K: a shared prefill)--> W*K candidate steps
             each candidate: env.restore(parent snapshot); env.step(action); snapshot
             RM scores the W*K partial trajectories --> `select_beams` keeps the top W
             kept candidates whose env is done move to `finished`; the rest are the new live beams

The search stops when no beam is live or after max_turns turns (live beams are
then finished as they stand) and returns the finished trajectory with the
highest score. The top-W cut and parent reindexing are one jitted pure
function (`select_beams`, one compile per (W, K)); the loop builds new
immutable trajectories and never touches its inputs, and it records every
expanded step as a `SearchNode` in `SearchResult.tree`.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from agentrm_jax.agents.loop import step_seed
from agentrm_jax.agents.policies import PolicySampler
from agentrm_jax.agents.prompts import build_messages, parse_step
from agentrm_jax.records import PROGRESS_TRACE, Step, Trajectory
from agentrm_jax.search.common import (CostMeter, EnvFactory, SearchConfig, SearchNode, SearchResult, finite_scores,
                                       turn_limit)

__all__ = ["beam_search", "select_beams", "select_beams_reference"]

_LOWEST = float(np.finfo(np.float32).min)
_HIGHEST = float(np.finfo(np.float32).max)
_TINY = float(np.finfo(np.float32).tiny)  # smallest normal float32


@functools.partial(jax.jit, static_argnames=("width",))
def select_beams(scores: jax.Array, valid: jax.Array, *, width: int
                 ) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """The top `width` of W*K candidates.

    scores: float32 [W, K], the score of sample k of beam w; valid: bool [W, K]
    (False for padding rows of beams that do not exist and dropped duplicates).
    Order: valid before invalid, then higher score, then lower flat index
    w*K + k (so ties go to the earlier beam and sample). NaN and -inf scores of valid
    candidates rank below every finite score but above invalid ones; +inf ranks
    as the largest float32; -0.0 and subnormals count as 0.0 (the order of
    `common.finite_scores`).

    Returns parents int32 [width] (the beam w), samples int32 [width] (k),
    chosen float32 [width] (their scores) and keep bool [width] (False where
    fewer than `width` valid candidates exist; those slots are padding).
    """
    w, k = scores.shape
    # NaN and -inf: the lowest finite value (below every real score, above invalid); +inf: the highest;
    # -0.0 and subnormals equal to 0.0 (top_k orders by bits, and XLA:CPU flushes subnormals to zero)
    finite = jnp.nan_to_num(scores, nan=_LOWEST, posinf=_HIGHEST, neginf=_LOWEST)
    finite = jnp.where(jnp.abs(finite) < _TINY, 0.0, finite)
    key = jnp.where(valid, finite, -jnp.inf).reshape(-1)
    take = min(width, w * k)
    _, flat = jax.lax.top_k(key, take)  # equal keys: the lower index first
    keep = valid.reshape(-1)[flat]
    chosen = scores.reshape(-1)[flat]
    pad = width - take
    if pad:
        flat = jnp.concatenate([flat, jnp.zeros((pad,), flat.dtype)])
        keep = jnp.concatenate([keep, jnp.zeros((pad,), bool)])
        chosen = jnp.concatenate([chosen, jnp.full((pad,), -jnp.inf, chosen.dtype)])
    return (flat // k).astype(jnp.int32), (flat % k).astype(jnp.int32), chosen, keep


def select_beams_reference(scores: np.ndarray, valid: np.ndarray, width: int) -> list[tuple[int, int]]:
    """Plain-Python statement of `select_beams`' order: the kept (beam, sample) pairs, best first."""
    w, k = scores.shape
    items = [(i, j) for i in range(w) for j in range(k) if valid[i, j]]

    def rank(item):
        s = float(scores[item])
        s = _LOWEST if np.isnan(s) or s == -np.inf else _HIGHEST if s == np.inf else s
        s = 0.0 if abs(s) < _TINY else s
        return (-s, item[0] * k + item[1])

    return sorted(items, key=rank)[:width]


@dataclass(frozen=True)
class _Beam:
    trajectory: Trajectory
    snapshot: object
    node: int  # id of the tree node it ends at (-1: the root state)


@dataclass(frozen=True)
class _Candidate:
    beam: int
    sample: int
    text: str
    trajectory: Trajectory | None  # None: a duplicate, never stepped
    snapshot: object
    done: bool


def beam_search(policy: PolicySampler, rm, env_factory: EnvFactory, cfg: SearchConfig = SearchConfig()
                ) -> SearchResult:
    """Step-level beam search on task `cfg.seed` with W = `cfg.beam_width`, K = `cfg.expansions`.

    Candidates are sampled at `cfg.temperature`; the RM scores each partial
    trajectory (`rm.score`: for an explicit RM the value at the last step, for
    an implicit PRM its aggregate of step rewards). With `cfg.dedupe`, a
    candidate whose action repeats an earlier sibling's is dropped before
    stepping and scoring. One env is made; every candidate is played on it
    after `restore` of its parent's snapshot.

    Returns the finished trajectory with the highest score (ties: the one
    finished first), all finished trajectories as candidates, and the tree.
    "Finished" means the env said done, or the turn limit cut the beam: both
    compete on their last score, as the RM cannot tell them apart either.
    """
    width, k = cfg.beam_width, cfg.expansions
    meter = CostMeter(policy, rm)
    env = env_factory()
    first = env.reset(cfg.seed)
    limit = turn_limit(env, cfg.max_turns)
    name = getattr(env, "name", "env")
    env_name = cfg.env_name or name
    root = Trajectory(task=name, instruction=first, id=f"{name}/{getattr(env, 'split', 'train')}/{cfg.seed}/beam{width}x{k}",
                      meta={PROGRESS_TRACE: [], "raw": []})
    beams = [_Beam(root, env.snapshot(), -1)]
    finished: list[tuple[Trajectory, float]] = []
    nodes: list[SearchNode] = []

    for turn in range(limit):
        if not beams:
            break
        contexts = [build_messages(b.trajectory, env_name=env_name, one_shot=cfg.one_shot,
                                   max_steps=cfg.max_history) for b in beams]
        rows = policy.sample(contexts, n=k, temperature=cfg.temperature, seed=step_seed(cfg.seed, turn))
        if len(rows) != len(contexts):
            raise ValueError(f"the policy returned {len(rows)} rows for {len(contexts)} contexts")
        meter.sampled(len(contexts), k)

        candidates: list[_Candidate] = []
        for b, (beam, row) in enumerate(zip(beams, rows)):
            seen: set[str] = set()
            for j in range(k):
                text = row[j] if j < len(row) and isinstance(row[j], str) else ""
                thought, action = parse_step(text)
                if cfg.dedupe and action in seen:
                    candidates.append(_Candidate(b, j, text, None, None, False))
                    continue
                seen.add(action)
                env.restore(beam.snapshot)
                meter.restored()
                observation, done = env.step(action)
                meter.stepped()
                progress = min(max(float(env.progress), 0.0), 1.0)
                trace = list(beam.trajectory.meta.get(PROGRESS_TRACE, [])) + [progress]
                child = beam.trajectory.append(Step(thought, action, str(observation)), success=bool(env.success),
                                               progress=progress,
                                               meta={PROGRESS_TRACE: trace, "raw": [*beam.trajectory.meta["raw"], text]})
                candidates.append(_Candidate(b, j, text, child, env.snapshot(), bool(done)))

        stepped = [c for c in candidates if c.trajectory is not None]
        stepped_scores = (finite_scores(rm.score([c.trajectory for c in stepped]), len(stepped)) if stepped
                          else np.zeros(0, np.float32))
        meter.scored(len(stepped))
        scores = np.full((width, k), -np.inf, np.float32)
        valid = np.zeros((width, k), bool)
        for c, s in zip(stepped, stepped_scores):
            scores[c.beam, c.sample], valid[c.beam, c.sample] = s, True
        parents, samples, _, keep = jax.device_get(select_beams(jnp.asarray(scores), jnp.asarray(valid), width=width))
        kept = {(int(p), int(s)) for p, s, ok in zip(parents, samples, keep) if ok}

        node_of: dict[tuple[int, int], int] = {}
        for c in candidates:
            node_of[(c.beam, c.sample)] = len(nodes)
            t = c.trajectory
            last = t.steps[-1] if t is not None else None
            nodes.append(SearchNode(
                id=len(nodes), parent=beams[c.beam].node, turn=turn, beam=c.beam, sample=c.sample, text=c.text,
                action=last.action if last else parse_step(c.text)[1], observation=last.observation if last else "",
                score=float(scores[c.beam, c.sample]), kept=(c.beam, c.sample) in kept, duplicate=t is None,
                done=c.done, success=bool(t.success) if t else False, progress=float(t.progress or 0.0) if t else 0.0))
        by_slot = {(c.beam, c.sample): c for c in candidates}
        next_beams = []
        for p, s, ok in zip(parents, samples, keep):  # best first
            if not ok:
                continue
            c = by_slot[(int(p), int(s))]
            if c.done:
                finished.append((c.trajectory, float(scores[p, s])))
            else:
                next_beams.append(_Beam(c.trajectory, c.snapshot, node_of[(int(p), int(s))]))
        beams = next_beams

    # Beams still live at the turn limit end there; their last score is their score.
    for beam in beams:
        finished.append((beam.trajectory, nodes[beam.node].score if beam.node >= 0 else -np.inf))
    if not finished:  # limit reached with the root only (cannot happen with limit >= 1), kept for safety
        finished.append((root.replace(success=False, progress=0.0), -np.inf))
    split = getattr(env, "split", "train")
    finished = [(t.replace(meta={**t.meta, "split": split, "seed": cfg.seed, "turns": len(t.steps)}), score)
                for t, score in finished]
    best = max(range(len(finished)), key=lambda i: (finished[i][1], -i))
    trajectory, score = finished[best]
    costs = meter.costs()
    params = {"beam_width": width, "expansions": k, "temperature": cfg.temperature, "max_turns": limit,
              "dedupe": cfg.dedupe}
    return SearchResult(method="beam", params=params, trajectory=trajectory, score=float(score),
                        costs=costs, candidates=tuple(t for t, _ in finished),
                        scores=tuple(float(s) for _, s in finished), tree=tuple(nodes))
