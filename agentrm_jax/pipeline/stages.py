"""A cached, resumable stage runner: `run_stages(stages, out)` runs each stage once and skips it after that.

    Stage(name, run, params, outputs, needs)   one step of a pipeline (plain data: what it does is `run`)
    plan_stages(stages, out) -> [StagePlan]    what each stage would do now: run, resume, skip, or refuse
    run_stages(stages, out, fresh=False)       run them in order, one line per stage

A stage writes into its own directory, `out/<name>/`. What makes a stage's outputs is its *fingerprint*:
a sha256 of its name, its `params` (the frozen config part that decides its outputs, as JSON) and the
fingerprints of the stages it `needs`, so a change upstream changes every stage below it. The directory
holds `stage.json`, written before `run` starts (status "running") and rewritten atomically when it
returns (status "complete", with its one-line summary and the seconds it took).

- complete, same fingerprint, every declared output present: skipped, and said so in one line.
- running (an interrupted run), same fingerprint: `run` is called again; the stage functions resume
  their own files (explore, collect, train and eval all do) or rewrite them. Partial outputs never
  count as complete: only status "complete" with every output present does.
- another fingerprint (complete or not): refused before any stage runs, in one line naming the stage,
  the changed keys and `--fresh`. `fresh=True` deletes every stage's directory and recomputes.
- `out` itself must be new, empty or a directory this runner made (it holds `pipeline.json`); anything
  else is refused, with or without `fresh`, so a user's files are never deleted.

Generic on purpose: a pipeline is a list of `Stage`s built from a frozen config (`pipeline.demo`
builds the demo's); nothing here knows what a stage computes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["MANIFEST", "MARKER", "Stage", "StageContext", "StageMismatch", "StagePlan", "changed_stages",
           "fingerprints", "plan_stages", "run_stages"]

MANIFEST = "stage.json"
MARKER = "pipeline.json"
MARKER_KIND = "agentrm.pipeline"


class StageMismatch(ValueError):
    """A stage's directory holds outputs of another config; the message is one line naming --fresh."""


@dataclass(frozen=True)
class StageContext:
    """What a running stage gets: its directory, the directories of the stages it needs, a printer."""

    name: str
    dir: Path
    inputs: Mapping[str, Path]
    log: Callable[[str], None]


@dataclass(frozen=True)
class Stage:
    """One pipeline step.

    name: its directory under `out` (a plain word). run(ctx) -> its one-line summary (str).
    params: JSON-able values that decide its outputs (part of the fingerprint; nothing else is).
    outputs: files or directories, relative to the stage directory, that a complete stage holds.
    needs: names of earlier stages whose outputs it reads (their fingerprints enter its own).
    """

    name: str
    run: Callable[[StageContext], str]
    params: Mapping[str, Any] = field(default_factory=dict)
    outputs: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()


@dataclass(frozen=True)
class StagePlan:
    """What `run_stages` would do with one stage: action is "run", "resume" or "skip"."""

    stage: Stage
    fingerprint: str
    action: str
    summary: str = ""


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fingerprints(stages: Sequence[Stage]) -> dict[str, str]:
    """name -> fingerprint (16 hex digits) of every stage; ValueError for an unknown or later `needs`."""
    out: dict[str, str] = {}
    for stage in stages:
        if not stage.name or "/" in stage.name or stage.name.startswith("."):
            raise ValueError(f"stage name {stage.name!r} must be a plain directory name")
        if stage.name in out:
            raise ValueError(f"two stages are named {stage.name!r}")
        missing = [n for n in stage.needs if n not in out]
        if missing:
            raise ValueError(f"stage {stage.name!r} needs {missing[0]!r}, which is not an earlier stage")
        out[stage.name] = _digest({"stage": stage.name, "params": stage.params,
                                   "needs": {n: out[n] for n in stage.needs}})
    return out


def _read_manifest(directory: Path) -> dict | None:
    path = directory / MANIFEST
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None  # torn by a kill mid-write: the stage is not complete
    return manifest if isinstance(manifest, dict) else None


def _write_json(path: Path, value: dict) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=1, sort_keys=True, default=str), encoding="utf-8")
    os.replace(tmp, path)  # atomic: a reader sees the old manifest or the new one


def _changes(old: Any, new: Any, prefix: str = "") -> list[str]:
    """'key: old -> new' for every leaf that differs between two params mappings."""
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new)):
            found += _changes(old.get(key), new.get(key), f"{prefix}{key}.")
        return found
    return [] if old == new else [f"{prefix.rstrip('.')}: {json.dumps(old, default=str)} -> {json.dumps(new, default=str)}"]


def _check_out(out: Path, pipeline: str) -> None:
    marker = out / MARKER
    if marker.is_file():
        try:
            kind = json.loads(marker.read_text(encoding="utf-8")).get("kind")
        except (json.JSONDecodeError, AttributeError):
            kind = None
        if kind == MARKER_KIND:
            made_by = json.loads(marker.read_text(encoding="utf-8")).get("pipeline")
            if made_by not in (None, pipeline):  # another pipeline's stages may share names with ours
                raise ValueError(f"{out} holds the stages of `agentrm {made_by}`, not of `agentrm {pipeline}`; "
                                 "choose another --out (nothing there is touched)")
            return
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ValueError(f"{out} exists and was not written by `agentrm {pipeline}` (no {MARKER}); choose another "
                         "--out (nothing there is touched)")


def plan_stages(stages: Sequence[Stage], out: str | os.PathLike, *, pipeline: str = "pipeline") -> list[StagePlan]:
    """What each stage would do now (see the module docstring); raises StageMismatch for the first stage
    whose directory holds another config's outputs, and ValueError for an `out` that is not ours."""
    out = Path(out)
    _check_out(out, pipeline)
    prints = fingerprints(stages)
    plans = []
    for stage in stages:
        directory = out / stage.name
        manifest = _read_manifest(directory)
        fp = prints[stage.name]
        if manifest is None:
            if directory.exists() and any(p.name != MANIFEST for p in directory.iterdir()):
                action = "resume"  # files without a readable manifest: a run killed before it wrote one
            else:
                action = "run"
            plans.append(StagePlan(stage, fp, action))
            continue
        if manifest.get("fingerprint") != fp:
            changed = _changes(manifest.get("params"), json.loads(json.dumps(dict(stage.params), default=str)))
            why = "; ".join(changed[:3]) + ("; ..." if len(changed) > 3 else "") if changed else \
                "a stage it needs changed: " + ", ".join(stage.needs)
            raise StageMismatch(f"stage {stage.name!r} in {directory} was made with another config ({why}); "
                                f"pass --redo-changed to recompute it and the stages below it (--fresh "
                                f"recomputes every stage), or choose another --out")
        complete = manifest.get("status") == "complete" and all((directory / o).exists() for o in stage.outputs)
        plans.append(StagePlan(stage, fp, "skip" if complete else "resume", manifest.get("summary", "")))
    return plans


def changed_stages(stages: Sequence[Stage], out: str | os.PathLike) -> list[str]:
    """Names of the stages whose directory under `out` holds a manifest of another fingerprint (another
    config, or a stage it needs changed: fingerprints chain, so every stage below a change is named)."""
    prints = fingerprints(stages)
    found = []
    for stage in stages:
        manifest = _read_manifest(Path(out) / stage.name)
        if manifest is not None and manifest.get("fingerprint") != prints[stage.name]:
            found.append(stage.name)
    return found


def run_stages(stages: Sequence[Stage], out: str | os.PathLike, *, fresh: bool = False,
               redo_changed: bool = False, pipeline: str = "pipeline",
               log: Callable[[str], None] | None = None) -> dict[str, str]:
    """Run (or skip, or resume) every stage in order; returns name -> one-line summary.

    fresh: delete every stage directory first (only those: `out` holds nothing else of ours) and
    recompute. redo_changed: delete only the directories of `changed_stages` (a changed config and
    everything below it) and keep every stage still valid. log(line) prints a line (default: stderr,
    flushed). Every check that needs no computation (out, fingerprints) happens before the first stage runs.
    """
    if log is None:
        def log(line: str) -> None:
            print(line, file=sys.stderr, flush=True)

    out = Path(out)
    _check_out(out, pipeline)
    if fresh or redo_changed:
        doomed = [s.name for s in stages] if fresh else changed_stages(stages, out)  # checks the list first
        for name in doomed:
            if redo_changed and not fresh:
                log(f"{name}: made with another config, recomputing it")
            shutil.rmtree(out / name, ignore_errors=True)
    plans = plan_stages(stages, out, pipeline=pipeline)
    out.mkdir(parents=True, exist_ok=True)
    # rewritten every run: readers (the reproduce report's wall-time table) take the current stage list
    _write_json(out / MARKER, {"kind": MARKER_KIND, "pipeline": pipeline, "stages": [s.name for s in stages]})
    summaries: dict[str, str] = {}
    total = len(plans)
    for i, plan in enumerate(plans, 1):
        stage, directory = plan.stage, out / plan.stage.name
        tag = f"[{i}/{total}] {stage.name}"
        if plan.action == "skip":
            log(f"{tag}: done already, skipped (same config; --fresh recomputes): {plan.summary}")
            summaries[stage.name] = plan.summary
            continue
        log(f"{tag}: {'resuming an interrupted run' if plan.action == 'resume' else 'running'} ...")
        directory.mkdir(parents=True, exist_ok=True)
        manifest = {"stage": stage.name, "fingerprint": plan.fingerprint, "params": dict(stage.params),
                    "needs": list(stage.needs), "outputs": list(stage.outputs), "status": "running"}
        _write_json(directory / MANIFEST, manifest)
        t0 = time.perf_counter()
        context = StageContext(name=stage.name, dir=directory, inputs={n: out / n for n in stage.needs}, log=log)
        summary = stage.run(context)
        seconds = time.perf_counter() - t0
        missing = [o for o in stage.outputs if not (directory / o).exists()]
        if missing:
            raise RuntimeError(f"stage {stage.name!r} returned without writing {missing[0]} in {directory}")
        _write_json(directory / MANIFEST, {**manifest, "status": "complete", "summary": summary,
                                           "seconds": round(seconds, 1)})
        log(f"{tag}: {summary} ({seconds:.0f} s)")
        summaries[stage.name] = summary
    return summaries
