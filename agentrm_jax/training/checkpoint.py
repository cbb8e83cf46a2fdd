"""Checkpoints of a training run: state arrays, data-iterator state and run metadata.

One orbax `CheckpointManager` step directory per checkpoint, four items in it:

    <directory>/<step>/state/       the arrays (orbax StandardSave: tensorstore, each host writes its shards)
    <directory>/<step>/layout/      JSON: one row per leaf of the state pytree (key path, kind, shape, dtype),
                                    the values of python scalars and the implementation of PRNG keys
    <directory>/<step>/data_state/  JSON: the data iterator's state
    <directory>/<step>/meta/        JSON: run config, losses so far, ...

How the state pytree is stored. It is flattened with `nnx.Variable` as a leaf, so an nnx.State (and the
optimizer state mirroring it) is stored by its key paths ("params/layers/0/attn/q_proj/kernel") without the
Variable wrapper and its metadata; the target given to `restore` supplies the wrappers back (its tree
structure is used to rebuild the result), so the restored tree is exactly the target's kind of tree.
Leaves by kind:
- arrays (jax.Array, numpy): saved as they are; restored with the target leaf's dtype and sharding
  (a jax.ShapeDtypeStruct must carry `.sharding`; a concrete jax.Array lends its own; a numpy target
  restores as numpy). Orbax reads each device's slice straight into place, so a checkpoint saved on one
  mesh restores onto any other. A dtype different from the saved one is a cast (e.g. float32 -> bfloat16).
- typed PRNG keys (jax.random.key): saved as `jax.random.key_data` (uint32 [..., 2] for threefry) with the
  impl name in the layout, restored with `jax.random.wrap_key_data` onto the target's sharding.
- python bool / int / float: kept in the layout JSON, returned as saved.

Atomicity: orbax writes a step into `<step>.orbax-checkpoint-tmp` and renames it when complete
(a commit file on object stores), and only completed steps are listed; `cleanup_tmp_directories`
removes what a killed writer left behind when the next Checkpointer opens the directory.

Damage after the fact (a truncated, missing or garbled file in a completed step: a full disk, a bad
copy) makes `restore` / `read_meta` raise `CorruptCheckpointError` naming the step and the file, not
orbax's traceback; `set_aside(step)` renames such a step to `<step>.corrupt`, which orbax no longer
lists, so rotation and later saves of that step number work as before.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import warnings
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import nnx
from jax.sharding import NamedSharding, SingleDeviceSharding

log = logging.getLogger(__name__)

LAYOUT_VERSION = 1

# The JSON items of a step; orbax's JsonCheckpointHandler keeps each in `<step>/<item>/metadata`.
_JSON_ITEMS = ("layout", "data_state", "meta")
_JSON_ITEM_FILE = "metadata"
CORRUPT_SUFFIX = ".corrupt"


class CorruptCheckpointError(ValueError):
    """A completed checkpoint cannot be read: `step`, `file` (relative to the step directory, or "" for
    the step as a whole) and `reason` say where and why."""

    def __init__(self, directory, step: int, file: str, reason: str):
        self.directory, self.step, self.file, self.reason = directory, step, file, reason
        super().__init__(f"checkpoint step {step} in {directory} is damaged: {self.damage}")

    @property
    def damage(self) -> str:
        """What is wrong, e.g. "meta/metadata is not valid JSON (...)"."""
        return f"{self.file} {self.reason}" if self.file else self.reason


class Checkpointer:
    """Atomic, rotating checkpoints of a training run in `directory` (orbax CheckpointManager).

    `save` blocks until the checkpoint is on disk; only the newest `keep` checkpoints are kept.
    Use as a context manager or call `close()`.
    """

    def __init__(self, directory: str | os.PathLike, *, keep: int = 3):
        if keep < 1:
            raise ValueError(f"keep={keep}: must keep at least 1 checkpoint")
        path = os.fspath(directory)
        # etils.epath (orbax's own path type) so gs:// and other object-store URIs work as well as local paths.
        self.directory = epath.Path(path if "://" in path else os.path.abspath(path))
        self.keep = keep
        # Synchronous saves: save() returns once the step directory is renamed into place, so a
        # SIGKILL right after it cannot lose the checkpoint. The directory is created by the first
        # save (create=False), so restoring from a mistyped path does not leave an empty folder.
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=False, cleanup_tmp_directories=True,
                                               enable_async_checkpointing=False)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step; None when there is none."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """Steps of all complete checkpoints, ascending."""
        return sorted(self._manager.all_steps())

    def save(self, step: int, state, *, data_state: dict, meta: dict, force: bool = False) -> None:
        """Writes checkpoint `step` and waits until it is durable.

        A step already on disk is left as is (logged) unless `force`, which replaces it (deleting the
        old one first: not atomic, the other kept checkpoints are the fallback). Rotation deletes the
        oldest checkpoints beyond `keep` (by step number).
        """
        step = int(step)
        _check_json("data_state", data_state)
        _check_json("meta", meta)
        arrays, layout = _to_storage(state)
        if step in self.all_steps():
            if not force:
                log.warning("checkpoint %d already exists in %s; not overwritten (pass force=True)", step,
                            self.directory)
                return
            self._manager.delete(step)
        self.directory.mkdir(parents=True, exist_ok=True)
        items = dict(layout=ocp.args.JsonSave(layout), data_state=ocp.args.JsonSave(data_state),
                     meta=ocp.args.JsonSave(meta))
        if arrays:  # orbax refuses an empty pytree item; a state of python scalars lives in the layout alone
            items["state"] = ocp.args.StandardSave(arrays)
        args = ocp.args.Composite(**items)
        # force=True: orbax would otherwise skip any step <= its latest one; duplicates are handled above.
        self._manager.save(step, args=args, force=True)
        self._manager.wait_until_finished()

    def restore(self, step: int | None, target, *, partial: bool = False) -> tuple[Any, dict, dict]:
        """Reads checkpoint `step` (None: the latest) into the structure, dtypes and shardings of `target`.

        `target` is the state's pytree with jax.ShapeDtypeStruct(shape, dtype, sharding=...) leaves (or
        concrete arrays, whose dtype and sharding are used), e.g. the abstract state of the trainer's
        init under the new mesh. Returns (state, data_state, meta). Raises FileNotFoundError when the
        directory holds no such checkpoint, ValueError naming the first mismatched key path when the
        structures differ, CorruptCheckpointError (a ValueError) naming the step and file when a file of
        the checkpoint is missing, truncated or garbled.

        partial: `target` may be a part of the saved tree (e.g. {"params": ...} of a checkpoint that also
        holds "opt_state"); only its leaves are read from disk, the others are never loaded (orbax's
        partial restore), so restoring a model for inference costs no optimizer-state memory.
        """
        step = self._resolve(step)
        where = f"checkpoint {self.directory / str(step)}"
        self._check_json_items(step, state=True)
        layout = self._read(step, layout=ocp.args.JsonRestore()).layout
        abstract, finish = _plan_restore(layout, target, where, partial=partial)
        items = dict(data_state=ocp.args.JsonRestore(), meta=ocp.args.JsonRestore())
        if abstract and not partial:
            items["state"] = ocp.args.StandardRestore(abstract)
        restored = self._read(step, **items)
        if abstract and partial:
            return finish(self._read_part(step, abstract)), restored.data_state, restored.meta
        return finish(restored.state if abstract else {}), restored.data_state, restored.meta

    def read_meta(self, step: int | None = None) -> dict:
        """The meta JSON of checkpoint `step` (None: the latest); CorruptCheckpointError if it is damaged."""
        step = self._resolve(step)
        self._check_json_items(step, items=("meta",))
        return self._read(step, meta=ocp.args.JsonRestore()).meta

    def set_aside(self, step: int) -> epath.Path:
        """Renames the (damaged) checkpoint `step` to `<step>.corrupt` (`.corrupt.1`, ... if taken) so it
        is no longer listed, restored or rotated, and returns the new path. Nothing is deleted."""
        step = self._resolve(step)
        source = self.directory / str(step)
        target = self.directory / f"{step}{CORRUPT_SUFFIX}"
        n = 0
        while target.exists():
            n += 1
            target = self.directory / f"{step}{CORRUPT_SUFFIX}.{n}"
        _sync_hosts(f"agentrm_set_aside_{step}_before")
        if jax.process_index() == 0:
            source.rename(target)
        _sync_hosts(f"agentrm_set_aside_{step}_after")
        self._manager.reload()
        return target

    def _check_json_items(self, step: int, items=_JSON_ITEMS, *, state: bool = False) -> None:
        """Raises CorruptCheckpointError for a missing or unparsable JSON item of `step` (a truncated
        file would otherwise surface as a bare `Expecting value: line 1 column 11`)."""
        step_dir = self.directory / str(step)
        for item in items:
            item_dir = step_dir / item
            if not item_dir.is_dir():
                raise CorruptCheckpointError(self.directory, step, f"{item}/", "is missing")
            file = item_dir / _JSON_ITEM_FILE
            if not file.exists():
                continue  # another orbax file layout: orbax itself reports what it misses
            try:
                json.loads(file.read_text())
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                raise CorruptCheckpointError(self.directory, step, f"{item}/{_JSON_ITEM_FILE}",
                                             f"is not valid JSON ({err}; truncated?)") from None
        state_meta = step_dir / "state" / "_METADATA"  # the array item's own JSON index
        if state and state_meta.exists():
            try:
                json.loads(state_meta.read_text())
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                raise CorruptCheckpointError(self.directory, step, "state/_METADATA",
                                             f"is not valid JSON ({err}; truncated?)") from None

    def _read(self, step: int, **items):
        """orbax's restore of `items`, with a damaged file reported as CorruptCheckpointError."""
        _quiet_closed_loop_noise()
        try:
            return self._manager.restore(step, args=ocp.args.Composite(**items))
        except Exception as err:
            raise self._as_corrupt(step, err) from err

    def _read_part(self, step: int, abstract: dict) -> dict:
        """The leaves of `abstract` (a part of the saved state tree) read from step's state item alone. A
        separate PyTree reader: the manager's `state` item is bound to the StandardSave handler, which
        has no partial restore."""
        _quiet_closed_loop_noise()
        restore_args = jax.tree.map(_restore_args, abstract)
        try:
            with ocp.Checkpointer(ocp.PyTreeCheckpointHandler()) as reader:
                return reader.restore(self.directory / str(step) / "state",
                                      args=ocp.args.PyTreeRestore(abstract, restore_args=restore_args,
                                                                  partial_restore=True))
        except Exception as err:
            raise self._as_corrupt(step, err) from err

    def _as_corrupt(self, step: int, err: Exception) -> Exception:
        """CorruptCheckpointError when orbax's `err` comes from a damaged file of `step`, else `err` itself."""
        damage = _describe_damage(str(self.directory / str(step)), err)
        return err if damage is None else CorruptCheckpointError(self.directory, step, *damage)

    def _resolve(self, step: int | None) -> int:
        steps = self.all_steps()
        if not steps:
            raise FileNotFoundError(f"no complete checkpoint in {self.directory}"
                                    + ("" if self.directory.is_dir() else " (the directory does not exist)"))
        if step is None:
            return steps[-1]
        if int(step) not in steps:
            raise FileNotFoundError(f"no checkpoint for step {step} in {self.directory}; available: {steps}")
        return int(step)

    def close(self) -> None:
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _sync_hosts(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


# tensorstore's status codes for data that is not what its metadata promises
_DAMAGE_CODES = {"NOT_FOUND": "is missing", "OUT_OF_RANGE": "is truncated", "DATA_LOSS": "is corrupt"}


def _describe_damage(step_dir: str, err: Exception) -> tuple[str, str] | None:
    """(file relative to the step directory, what is wrong with it) when orbax's `err` comes from a
    damaged file of the step at `step_dir`; None for any other error (it is not ours to reinterpret)."""
    if isinstance(err, json.JSONDecodeError):
        return "", f"holds a file that is not valid JSON ({err}; truncated?)"
    if isinstance(err, KeyError) and "not found in the checkpoint" in str(err):
        return "", f"lacks an item ({err.args[0] if err.args else err})"
    text = str(err).split(" [tensorstore_spec=")[0]
    files = [f for f in re.findall(r'local file "([^"]+)"', text) if not f.endswith("/")]
    if not (files or isinstance(err, OSError)) or step_dir not in text:
        return None
    name = os.path.relpath(files[-1], step_dir) if files else ""
    code = re.match(r"([A-Z_]+): ", text)
    code = code.group(1) if code else type(err).__name__
    reason = _DAMAGE_CODES.get(code, "cannot be read")
    detail = text.rsplit(": ", 1)[-1]
    return name, f"{reason} ({code}{': ' + detail if 'local file' not in detail else ''})"


_NOISE_FILTER_INSTALLED = False


# the start of the warning an abandoned orbax metadata read leaves at interpreter exit (a regex)
ORBAX_NEVER_AWAITED = r"coroutine 'Store\._get_array_metadatas' was never awaited"


def _is_orbax_read_left_over(record: logging.LogRecord) -> bool:
    """An asyncio "Task exception was never retrieved" record whose exception is a tensorstore read error
    (a sibling read of the failed restore, collected after orbax gave up on it)."""
    exc = record.exc_info[1] if record.exc_info else None
    return (str(record.msg).startswith("Task exception was never retrieved") and isinstance(exc, ValueError)
            and "tensorstore_spec" in str(exc))


def _quiet_closed_loop_noise() -> None:
    """When a restore fails on a damaged file, orbax abandons tensorstore's other pending reads, and they
    surface later as noise the restore's one-line error already covers: a 'RuntimeError: Event loop is
    closed' traceback through sys.unraisablehook (a read calling back into the closed loop), an asyncio
    "Task exception was never retrieved" traceback (a read that failed too) and, at exit, "coroutine
    'Store._get_array_metadatas' was never awaited". Drop exactly those; every other unraisable, asyncio
    record and warning goes where it went before."""
    global _NOISE_FILTER_INSTALLED
    if _NOISE_FILTER_INSTALLED:
        return
    previous = sys.unraisablehook

    def hook(unraisable):
        if unraisable.exc_type is RuntimeError and str(unraisable.exc_value) == "Event loop is closed":
            return
        previous(unraisable)

    sys.unraisablehook = hook
    logging.getLogger("asyncio").addFilter(lambda record: not _is_orbax_read_left_over(record))
    warnings.filterwarnings("ignore", message=ORBAX_NEVER_AWAITED, category=RuntimeWarning)
    _NOISE_FILTER_INSTALLED = True


def read_meta(directory: str | os.PathLike, step: int | None = None) -> dict:
    """The meta of a checkpoint in `directory` (None: the latest), without building a target."""
    with Checkpointer(directory) as ckpt:
        return ckpt.read_meta(step)


# ---------------------------------------------------------------- state pytree <-> stored form


def _is_variable(x) -> bool:
    return isinstance(x, nnx.Variable)


def _is_key(x) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _is_scalar(x) -> bool:
    return isinstance(x, (bool, int, float)) and not isinstance(x, np.generic)  # np.float64 subclasses float


def _flatten(tree) -> tuple[list[tuple[tuple[str, ...], Any]], Any]:
    """[(key path as strings, leaf)] with Variables unwrapped to their values, and the full treedef."""
    pairs, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=_is_variable)
    entries = [(tuple(_key_name(k) for k in path), leaf.get_value() if _is_variable(leaf) else leaf)
               for path, leaf in pairs]
    # The full treedef (through the Variables) is what rebuilds a tree of the target's kind; each
    # Variable holds exactly one array, so its leaves line up with `entries`.
    treedef = jax.tree_util.tree_structure(tree)
    if treedef.num_leaves != len(entries):
        raise TypeError(f"state has a Variable whose value is not a single array ({treedef.num_leaves} leaves "
                        f"vs {len(entries)} variables/arrays)")
    return entries, treedef


def _key_name(key) -> str:
    for attr in ("key", "idx", "name"):  # DictKey / FlattenedIndexKey, SequenceKey, GetAttrKey
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)


def _put(tree: dict, path: tuple[str, ...], value) -> None:
    """Stores `value` at `path` in nested dicts (orbax's most portable tree); "_" names a bare-array state."""
    for name in path[:-1]:
        tree = tree.setdefault(name, {})
    tree[path[-1] if path else "_"] = value


def _get(tree: dict, path: tuple[str, ...]):
    for name in path or ("_",):
        tree = tree[name]
    return tree


def _show(path: tuple[str, ...]) -> str:
    return "/".join(path) or "<root>"


def _to_storage(state) -> tuple[dict, dict]:
    """(nested dict of arrays for orbax, layout JSON)."""
    entries, _ = _flatten(state)
    arrays: dict = {}
    leaves = []
    for path, leaf in entries:
        if _is_scalar(leaf):
            leaves.append({"path": list(path), "kind": "scalar", "value": leaf})
            continue
        if _is_key(leaf):
            row = {"kind": "key", "impl": str(jax.random.key_impl(leaf))}
            leaf = jax.random.key_data(leaf)
        elif isinstance(leaf, (jax.Array, np.ndarray, np.generic)):
            row = {"kind": "array"}
            leaf = np.asarray(leaf) if isinstance(leaf, np.generic) else leaf
        else:
            raise TypeError(f"state leaf {_show(path)} is a {type(leaf).__name__}; checkpoints hold jax/numpy "
                            "arrays, PRNG keys and python bool/int/float")
        leaves.append({"path": list(path), **row, "shape": list(leaf.shape), "dtype": str(leaf.dtype)})
        _put(arrays, path, leaf)
    return arrays, {"version": LAYOUT_VERSION, "leaves": leaves}


def _plan_restore(layout: dict, target, where: str, *, partial: bool = False) -> tuple[dict, Callable[[dict], Any]]:
    """(abstract nested dict for orbax, function rebuilding the target-shaped tree from orbax's result).
    partial: saved leaves the target lacks are left out (not an error)."""
    entries, treedef = _flatten(target)
    saved = {tuple(row["path"]): row for row in layout["leaves"]}
    wanted = {path for path, _ in entries}
    missing = [path for path, _ in entries if path not in saved]
    extra = [] if partial else [path for path in saved if path not in wanted]
    if missing or extra:
        first = (f"the target has {_show(missing[0])!r}, which the checkpoint lacks" if missing else
                 f"the checkpoint has {_show(extra[0])!r}, which the target lacks")
        raise ValueError(f"{where} does not match the target structure: {first} "
                         f"({len(missing)} missing, {len(extra)} unexpected key paths)")

    abstract: dict = {}
    for path, leaf in entries:
        row = saved[path]
        spec = _abstract_leaf(path, row, leaf, where)
        if spec is None:
            continue
        _put(abstract, path, spec)

    def finish(restored: dict) -> Any:
        out = []
        for path, _ in entries:
            row = saved[path]
            if row["kind"] == "scalar":
                out.append(row["value"])
                continue
            value = _get(restored, path)
            out.append(jax.random.wrap_key_data(value, impl=row["impl"]) if row["kind"] == "key" else value)
        return jax.tree_util.tree_unflatten(treedef, out)

    return abstract, finish


def _abstract_leaf(path, row: dict, leaf, where: str):
    """What orbax restores one leaf into: a sharded ShapeDtypeStruct, a numpy array, or None (scalar)."""
    name = _show(path)
    target_kind = "key" if _is_key(leaf) else "scalar" if _is_scalar(leaf) else "array"
    if target_kind != row["kind"]:
        article = "an" if target_kind == "array" else "a"
        raise ValueError(f"{where} does not match the target structure at {name!r}: saved a {row['kind']}, "
                         f"the target has {article} {target_kind} ({type(leaf).__name__})")
    if row["kind"] == "scalar":
        return None
    shape = tuple(leaf.shape)
    saved_shape = tuple(row["shape"])
    if row["kind"] == "key":
        data = jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(shape, leaf.dtype))
        if tuple(data.shape) != saved_shape:
            raise ValueError(f"{where}: PRNG key {name!r} has key data of shape {saved_shape} in the checkpoint, "
                             f"the target's is {tuple(data.shape)}")
        sharding = _key_data_sharding(_sharding_of(leaf, name), name)
        return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=sharding)
    if shape != saved_shape:
        raise ValueError(f"{where}: {name!r} has shape {saved_shape} in the checkpoint, the target wants {shape}")
    if isinstance(leaf, (np.ndarray, np.generic)):
        return np.zeros(shape, leaf.dtype)  # orbax restores numpy targets as numpy arrays
    return jax.ShapeDtypeStruct(shape, leaf.dtype, sharding=_sharding_of(leaf, name))


def _restore_args(leaf) -> ocp.RestoreArgs:
    """orbax's per-leaf restore arguments for a leaf of `_plan_restore`'s abstract tree (partial restore)."""
    if isinstance(leaf, np.ndarray):
        return ocp.RestoreArgs(restore_type=np.ndarray, dtype=leaf.dtype)
    return ocp.ArrayRestoreArgs(sharding=leaf.sharding, dtype=leaf.dtype, global_shape=leaf.shape)


def _sharding_of(leaf, name: str):
    sharding = getattr(leaf, "sharding", None)
    if sharding is None:
        raise ValueError(f"target leaf {name!r} has no sharding; give jax.ShapeDtypeStruct(shape, dtype, "
                         "sharding=...) or a concrete jax.Array so the restored array knows where to live")
    return sharding


def _key_data_sharding(sharding, name: str):
    """The sharding of a key's data: the key's own. A NamedSharding's spec leaves the trailing key-data
    dimension unnamed, i.e. whole on every device, and a single device holds all of it."""
    if isinstance(sharding, (NamedSharding, SingleDeviceSharding)):
        return sharding
    raise ValueError(f"PRNG key {name!r}: sharding {type(sharding).__name__} is not supported for keys; "
                     "use a NamedSharding or SingleDeviceSharding")


def _check_json(what: str, value) -> None:
    if not isinstance(value, dict):
        raise TypeError(f"{what} must be a JSON dict, got {type(value).__name__}")
    try:
        json.dumps(value)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{what} is not JSON-serialisable: {err}") from err
