"""`run_explore(cfg)`: grow one tree per task seed into a resumable JSONL file, optionally in worker processes.

The trees file (`cfg.output`): a header line, then one tree per line (`tree.Tree.to_dict`):

    {"kind": "agentrm.explore/trees", "version": 1, "fingerprint": ..., "config": cfg.tree_fields()}
    {"key": "maze|train|0", ..., "nodes": [...]}

Resume: a tree is appended (and fsynced, `records.append_jsonl`) as soon as it is finished, so a run
killed at any point loses only trees in flight; rerunning cuts a torn last line, skips every key
already written, and regrows only the chunks (`mcts.seed_chunks`) that still miss a tree, writing the
missing trees only; since a chunk's trees depend on the config and the chunk alone, they are the trees
an uninterrupted run writes. The parent process is the only writer, with local worker processes
(`cfg.workers`) and with Ray actors (`cfg.ray`, `ray_workers.trees_on_ray`) alike. A file whose header names another
tree config (`ExploreConfig.fingerprint`) is refused, never appended to or overwritten.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from agentrm_jax.records import RecordError, append_jsonl, read_object_lines
from agentrm_jax.explore.config import ExploreConfig
from agentrm_jax.explore.mcts import grow_trees, seed_chunks
from agentrm_jax.explore.tree import Tree, tree_key

__all__ = ["HEADER_KIND", "check_header", "env_factory", "policy_maker", "read_trees", "read_trees_file",
           "run_explore"]

HEADER_KIND = "agentrm.explore/trees"


# ----------------------------------------------------------------------------------------------- file


def read_trees_file(path: str | os.PathLike, *, repair: bool = False) -> tuple[dict | None, list[dict[str, Any]]]:
    """(header, tree rows) of a trees file ((None, []) if it does not exist or is empty).

    A last line without its newline is a write cut short by a kill: kept if it parses as a complete
    object (repair=True adds the newline), dropped otherwise (repair=True truncates it). A malformed line
    elsewhere, or a first line that is not an explore header, raises RecordError naming file:line.
    """
    header, rows = _read_lines(path, repair=repair)
    return header, [row for _, row in rows]


def _read_lines(path, *, repair: bool = False) -> tuple[dict | None, list[tuple[int, dict[str, Any]]]]:
    """`read_trees_file` with each tree row's line number."""
    rows = read_object_lines(path, repair=repair)
    if not rows:
        return None, []
    lineno, header = rows[0]
    if header.get("kind") != HEADER_KIND:
        raise RecordError(f"not an explore trees file (its first line is not a {HEADER_KIND!r} header); "
                          "give `agentrm explore` another --out", path=str(path), line=lineno)
    return header, rows[1:]


def read_trees(path: str | os.PathLike) -> list[Tree]:
    """Every tree of a trees file, parsed; RecordError names file:line and the field of a bad one."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such trees file (write one with `agentrm explore ... --out {path}`)")
    _, rows = _read_lines(path)
    trees = []
    for lineno, row in rows:
        try:
            trees.append(Tree.from_dict(row))
        except RecordError as e:
            raise RecordError(str(e), path=str(path), line=lineno, field=e.field) from None
    return trees


def _header(cfg: ExploreConfig) -> dict[str, Any]:
    return {"kind": HEADER_KIND, "version": 1, "fingerprint": cfg.fingerprint(), "config": cfg.tree_fields()}


def check_header(header: dict[str, Any], cfg: ExploreConfig, path: str | os.PathLike) -> None:
    """Raise ValueError (one line, naming the differing keys) if `header` is not `cfg`'s tree config."""
    if header.get("fingerprint") == cfg.fingerprint():
        return
    old, new = header.get("config") or {}, cfg.tree_fields()
    diffs = [f"{k}: {old.get(k)!r} in the file, {new.get(k)!r} now" for k in sorted(set(old) | set(new))
             if old.get(k) != new.get(k)]
    raise ValueError(f"{path} holds trees of another explore config ({'; '.join(diffs) or 'another version'}); "
                     "resume with the same config or write to another --out")


# ----------------------------------------------------------------------------------------- resources


def env_factory(cfg: ExploreConfig) -> Callable[[], object]:
    """A function making a fresh env of the config (not reset); raises for an unknown env name."""
    from agentrm_jax.agents.factory import make_env
    from agentrm_jax.envs import REGISTRY

    kwargs = {"max_turns": cfg.max_turns} if cfg.max_turns is not None else {}
    make_env(cfg.env, seed=cfg.seeds[0], split=cfg.split, **kwargs)  # unknown names fail here, in one line
    spec = REGISTRY[cfg.env]
    return lambda: spec.factory(split=cfg.split, **kwargs)


def policy_maker(cfg: ExploreConfig, factory: Callable[[], object]) -> Callable[[int], object]:
    """policy_for(seed): the expert / random policy of that task, or the one model policy for all tasks."""
    from agentrm_jax.agents.factory import make_policy

    if cfg.policy in ("expert", "random"):
        def policy_for(seed: int):
            probe = factory()
            probe.reset(seed)
            return make_policy(cfg.policy, probe, seed=cfg.policy_seed, noise=cfg.noise)
        return policy_for
    shared = make_policy(cfg.policy, None, max_new_tokens=cfg.max_new_tokens, kv_cache_mb=cfg.kv_cache_mb,
                         concurrency=cfg.concurrency, drop_tokens=cfg.drop_tokens)
    return lambda seed: shared


# ------------------------------------------------------------------------------------------- workers

_WORKER: tuple | None = None  # (cfg, factory, policy_for), set in worker processes by _init_worker


def _exit_with_parent(parent: int) -> None:
    """Exit when the parent is gone (a killed `agentrm explore` must not leave workers growing trees)."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(1)


def _init_worker(cfg: ExploreConfig, parent: int) -> None:
    global _WORKER
    factory = env_factory(cfg)
    _WORKER = (cfg, factory, policy_maker(cfg, factory))
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True).start()


def _work(chunk: tuple[int, ...]) -> list[dict[str, Any]]:
    assert _WORKER is not None, "worker not initialised"
    cfg, factory, policy_for = _WORKER
    return [t.to_dict() for t in grow_trees(cfg, chunk, policy_for=policy_for, factory=factory)]


def _trees_in_pool(cfg: ExploreConfig, chunks: Sequence[tuple[int, ...]], workers: int,
                   on_chunk: Callable[[int], None]) -> Iterator[dict[str, Any]]:
    ctx = multiprocessing.get_context("spawn")  # fork after JAX has started threads can deadlock
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                               initargs=(cfg, os.getpid()))
    try:
        pending = {pool.submit(_work, chunk): chunk for chunk in chunks}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                chunk = pending.pop(fut)
                rows = fut.result()
                on_chunk(len(chunk))
                yield from rows
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# ------------------------------------------------------------------------------------------- driver


def run_explore(cfg: ExploreConfig, *, policy=None, factory: Callable[[], object] | None = None,
                progress: bool = True) -> dict[str, int]:
    """Grow the tree of every seed of `cfg` not yet in `cfg.output`, appending each; returns counts
    {"trees": in the file for cfg's seeds, "written": this run, "skipped": already there}.

    policy: one ready PolicySampler for every task instead of `cfg.policy`'s; factory: a fresh-env
    function instead of the registry's (both single-process only). A progress bar (stderr) shows
    simulations/s and the ETA.
    """
    if (cfg.workers > 1 or cfg.ray is not None) and (policy is not None or factory is not None):
        raise ValueError("run_explore: policy/factory objects cannot be shipped to worker processes or Ray "
                         "actors; use config specs, or workers=1 without ray")
    if cfg.ray is not None:
        from agentrm_jax.explore.ray_workers import import_ray

        import_ray()  # not installed: one line saying how, before anything is written
    out = Path(cfg.output)
    header, rows = read_trees_file(out, repair=True)
    if header is not None:
        check_header(header, cfg, out)
    for row in rows:
        if row.get("fingerprint") != cfg.fingerprint():
            raise ValueError(f"{out}: tree {row.get('key')!r} was grown by another explore config; resume with "
                             "the same config or write to another --out")
    keys = {tree_key(cfg.env, cfg.split, s): s for s in cfg.seeds}
    written = {row.get("key") for row in rows}
    skipped = sum(k in written for k in keys)
    missing = [s for k, s in keys.items() if k not in written]
    chunks = seed_chunks(cfg, missing)
    if factory is None:
        factory = env_factory(cfg)  # checks the env name before anything is written
    if header is None:
        append_jsonl(out, [_header(cfg)])
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=sum(len(c) for c in chunks) * cfg.simulations, desc=f"explore {cfg.env} -> {out.name}",
                   unit="sim", file=sys.stderr, dynamic_ncols=True)
    count = {"written": 0}

    def tick(n: int = 1) -> None:
        if bar is not None:
            bar.update(n)

    workers = min(cfg.workers, len(chunks))
    try:
        if cfg.ray is not None and chunks:
            from agentrm_jax.explore.ray_workers import trees_on_ray

            trees = trees_on_ray(cfg, chunks, lambda n: tick(n * cfg.simulations))
        elif workers > 1:
            trees = _trees_in_pool(cfg, chunks, workers, lambda n: tick(n * cfg.simulations))
        elif chunks:
            policy_for = (lambda seed: policy) if policy is not None else policy_maker(cfg, factory)
            trees = (t.to_dict() for chunk in chunks
                     for t in grow_trees(cfg, chunk, policy_for=policy_for, factory=factory, on_simulation=tick))
        else:  # nothing left to grow: no policy is built (a model would load for nothing)
            trees = iter(())
        try:
            for row in trees:
                if row["key"] in written or row["key"] not in keys:
                    continue  # regrown with its chunk, already in the file
                append_jsonl(out, [row])
                written.add(row["key"])
                count["written"] += 1
                if bar is not None:
                    bar.set_postfix(trees=f"{skipped + count['written']}/{len(keys)}", last=row["seed"])
        finally:
            close = getattr(trees, "close", None)
            if close is not None:
                close()
    finally:
        if bar is not None:
            bar.close()
    return {"trees": skipped + count["written"], "written": count["written"], "skipped": skipped}
