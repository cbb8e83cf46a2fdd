"""Prefix KV cache: the keys and values of earlier prompts and completions, reused by later prefills.

Agent turns re-send their whole context (system prompt, worked example,
history) to add a few dozen tokens; Best-of-N samples, beam children and
search expansions share long prefixes too. This cache keeps the KV of every
sequence the sampler has seen, so a prefill only computes a prompt's uncached
suffix.

Design
------
* Blocks. Sequences are cut into fixed blocks of `block` tokens (16). A block
  is identified by its path: a trie whose nodes are keyed by the block's token
  ids under their parent, so a node stands for the token prefix from the root
  to it. Only full blocks are stored; a prompt hits its longest stored
  block-aligned prefix, so chat-template boundaries that re-tokenize (a
  completion reformatted into the next context) cost at most the blocks from
  the first differing token on, never a wrong hit.
* Page pool. The KV of a block lives in one page of a preallocated device pool,
  per layer keys and values [pages, K, block, Dh] (the model's dtype). Page 0 is
  a scratch page: padding entries of the page table read it (masked) and padding
  writes land on it, so every gather and scatter has a static, bucketed shape.
  The pool grows by doubling (one more compile each time) up to the byte budget
  (`kv_cache_mb`), so a sampler that never reuses much never allocates much.
* Reading. `gather(table)` turns a page table [B, nb] into prefix KV
  [B, K, nb * block, Dh] per layer in one jitted gather.
* Writing. `insert` walks each finished row's tokens (prompt + kept completion)
  down the trie and copies the KV of every new full block from the decode cache
  (where a row's uncached tokens sit in consecutive slots) into fresh pages: one
  jitted scatter per call, the pool donated so it is updated in place.
* Eviction. When the pool is full, the least recently used leaf block is
  dropped (an inner block cannot go before its children: they would become
  unreachable), except the blocks the insert in flight created or is extending.
  Blocks are only evicted while inserting, after a chunk's prefill has read its
  hits; a sampler call of several chunks looks its later chunks up again after
  the earlier chunks' inserts. Insertion is best effort: when nothing can be evicted the rest of a
  sequence is simply not stored.
* Staleness. KV depends on the weights: `sync(graphdef, params)` (called at the
  start of every sampler call) empties the cache when the model's structure or
  any of its parameter arrays changed since the last call (weak references to
  the arrays, so no old weights are kept alive).
"""

from __future__ import annotations

import dataclasses
import functools
import weakref
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from agentrm_jax.models.buckets import next_power_of_two
from agentrm_jax.models.config import ModelConfig

DEFAULT_BLOCK = 16
DEFAULT_KV_CACHE_MB = 512.0
_MIN_POOL_PAGES = 64


@jax.jit
def _gather(pool_keys, pool_values, table):
    """table [B, nb] page ids -> per layer prefix keys/values [B, K, nb * block, Dh]."""
    def one(pool):  # [P, K, blk, Dh]
        pages = pool[table]  # [B, nb, K, blk, Dh]
        b, nb, k, blk, dh = pages.shape
        return pages.transpose(0, 2, 1, 3, 4).reshape(b, k, nb * blk, dh)
    return tuple(map(one, pool_keys)), tuple(map(one, pool_values))


# The pool is donated: it is the cache's whole memory, and a scatter of a few pages must not copy it.
@functools.partial(jax.jit, static_argnames=("block",), donate_argnames=("pool_keys", "pool_values"))
def _store(pool_keys, pool_values, cache_keys, cache_values, rows, starts, pages, *, block: int):
    """Copies cache[rows[i], :, starts[i]:starts[i] + block] into pool page pages[i] (all [M] int32)."""
    def one(pool, cache):  # pool [P, K, blk, Dh], cache [R, K, S, Dh]
        take = lambda r, s: jax.lax.dynamic_slice_in_dim(cache[r], s, block, axis=1)  # [K, blk, Dh]
        return pool.at[pages].set(jax.vmap(take)(rows, starts).astype(pool.dtype))
    return (tuple(map(one, pool_keys, cache_keys)), tuple(map(one, pool_values, cache_values)))


@functools.partial(jax.jit, static_argnames=("pages",))  # not donated: the output is bigger than the input
def _grow(pool, *, pages: int):
    """The pool arrays with `pages` pages (the new ones zero)."""
    return tuple(jnp.pad(p, ((0, pages - p.shape[0]), (0, 0), (0, 0), (0, 0))) for p in pool)


def compile_counts() -> dict[str, int]:
    """Programs held by the cache's gather, store and grow jits."""
    return {"cache_gather": _gather._cache_size(), "cache_store": _store._cache_size(),
            "cache_grow": _grow._cache_size()}


@dataclasses.dataclass(eq=False)
class _Node:
    """One stored block: the prefix from the root through this block's tokens."""

    key: tuple[int, ...]
    parent: "_Node | None"
    page: int
    children: dict[tuple[int, ...], "_Node"] = dataclasses.field(default_factory=dict)
    last_used: int = 0
    pinned: int = 0  # created by the insert in flight: not evictable


@dataclasses.dataclass
class CacheStats:
    """Cumulative counters of one `PrefixCache`."""

    evictions: int = 0  # blocks dropped to make room
    inserted_blocks: int = 0  # blocks stored
    invalidations: int = 0  # times the cache was emptied because the weights changed


class PrefixCache:
    """Token-block trie over a device page pool; see the module docstring.

    config/dtype: the model's (KV shapes and dtype). budget_mb: bytes the pages
    may use (keys and values of all layers); block: tokens per page.
    """

    def __init__(self, config: ModelConfig, dtype: Any, *, budget_mb: float = DEFAULT_KV_CACHE_MB,
                 block: int = DEFAULT_BLOCK):
        if block < 1:
            raise ValueError(f"prefix cache block must be >= 1 token, got {block}")
        if budget_mb <= 0:
            raise ValueError(f"kv_cache_mb must be > 0 for a prefix cache, got {budget_mb} "
                             f"(pass prefix_cache=False to disable it)")
        self.config = config
        self.dtype = jnp.dtype(dtype)
        self.block = int(block)
        self.page_bytes = 2 * config.num_layers * config.num_kv_heads * block * config.head_dim * self.dtype.itemsize
        self.budget_bytes = int(budget_mb * 2**20)
        self.capacity = self.budget_bytes // self.page_bytes  # pages, scratch page 0 not counted
        self.stats = CacheStats()
        self._root = _Node(key=(), parent=None, page=-1)
        self._by_page: dict[int, _Node] = {}
        self._free: list[int] = []
        self._pool_keys: tuple[jax.Array, ...] | None = None
        self._pool_values: tuple[jax.Array, ...] | None = None
        self._pool_pages = 0
        self._tick = 0
        self._weights: tuple[Any, list[weakref.ref]] | None = None

    # ---------------------------------------------------------------- bookkeeping

    @property
    def blocks(self) -> int:
        """Blocks (pages) held."""
        return len(self._by_page)

    @property
    def bytes_held(self) -> int:
        """Bytes of KV the held blocks occupy."""
        return self.blocks * self.page_bytes

    def clear(self) -> None:
        """Drops every block (the pool memory is kept for reuse)."""
        self._root = _Node(key=(), parent=None, page=-1)
        self._by_page.clear()
        self._free = list(range(self._pool_pages - 1, 0, -1))

    def sync(self, graphdef, params) -> None:
        """Empties the cache when the model's structure or any parameter array changed since the last call."""
        leaves = jax.tree.leaves(params)
        if self._weights is not None:
            old_graph, refs = self._weights
            same = old_graph == graphdef and len(refs) == len(leaves) and all(
                r() is leaf for r, leaf in zip(refs, leaves))
            if not same and self._by_page:
                self.clear()
                self.stats.invalidations += 1
        self._weights = (graphdef, [weakref.ref(leaf) for leaf in leaves])

    # ---------------------------------------------------------------- reading

    def lookup(self, ids: Sequence[int]) -> list[_Node]:
        """The stored blocks of `ids`' longest cached block-aligned prefix, root first (marked used now).

        At least one token is always left over: the prefill needs the last prompt token's logits.
        Blocks are only evicted by `insert`, so they stay valid until then.
        """
        self._tick += 1
        node, path = self._root, []
        for j in range((len(ids) - 1) // self.block):
            child = node.children.get(tuple(int(t) for t in ids[j * self.block:(j + 1) * self.block]))
            if child is None:
                break
            child.last_used = self._tick
            path.append(child)
            node = child
        return path

    def gather(self, table: np.ndarray) -> tuple[tuple[jax.Array, ...], tuple[jax.Array, ...]]:
        """Prefix keys and values [B, K, nb * block, Dh] per layer for a page table [B, nb] (0 = scratch)."""
        self._ensure_pool(1)
        return _gather(self._pool_keys, self._pool_values, jnp.asarray(table, jnp.int32))

    # ---------------------------------------------------------------- writing

    def insert(self, cache_keys, cache_values, rows: Sequence[tuple[int, Sequence[int], int, int]]) -> int:
        """Stores the full blocks of finished rows; returns how many blocks were new.

        rows: (cache row, token ids, cached prefix length from `lookup` (a multiple of the block),
        slot of the first token after that prefix). The tokens after the prefix must sit in
        consecutive slots of that row in cache_keys / cache_values (per layer [R, K, S, Dh]).
        """
        self._tick += 1
        created: list[_Node] = []  # pinned until the scatter: reusing their pages would clash in it
        copies: list[tuple[int, int, int]] = []  # (cache row, slot, page)
        for row, ids, cached, slot in rows:
            start = cached // self.block
            node = self._root
            for j in range(len(ids) // self.block):
                key = tuple(int(t) for t in ids[j * self.block:(j + 1) * self.block])
                child = node.children.get(key)
                if child is None:
                    # A prefix block evicted by an earlier row of this call: its KV is not in the
                    # row's consecutive slots, so the rest of the row cannot be stored.
                    page = None if j < start else self._allocate(node)
                    if page is None:
                        break
                    child = _Node(key=key, parent=node, page=page, pinned=1)
                    node.children[key] = child
                    self._by_page[page] = child
                    created.append(child)
                    copies.append((row, slot + (j - start) * self.block, page))
                child.last_used = self._tick
                node = child
        if copies:
            m = next_power_of_two(len(copies), 16)  # few store programs: one per cache shape, mostly
            arr = np.zeros((3, m), np.int32)  # padding copies write cache row 0's first block to page 0
            arr[:, :len(copies)] = np.asarray(copies, np.int32).T
            self._pool_keys, self._pool_values = _store(self._pool_keys, self._pool_values, tuple(cache_keys),
                                                        tuple(cache_values), *map(jnp.asarray, arr),
                                                        block=self.block)
            self.stats.inserted_blocks += len(copies)
        for node in created:
            node.pinned = 0
        return len(copies)

    def _allocate(self, parent: _Node) -> int | None:
        """A free page, growing the pool or evicting the LRU leaf (neither `parent`, which is about to get
        a child, nor a block created by this insert); None when neither is possible."""
        if not self._free and self.blocks < self.capacity:
            self._ensure_pool(self._pool_pages + 1)
        if not self._free:
            victims = [n for n in self._by_page.values() if not n.children and not n.pinned and n is not parent]
            if not victims:
                return None
            victim = min(victims, key=lambda n: n.last_used)
            del victim.parent.children[victim.key]
            del self._by_page[victim.page]
            self._free.append(victim.page)
            self.stats.evictions += 1
        return self._free.pop()

    def _ensure_pool(self, pages: int) -> None:
        """A pool of at least `pages` pages (scratch included): doubling, capped at capacity + 1."""
        if pages <= self._pool_pages:
            return
        size = min(max(next_power_of_two(pages), _MIN_POOL_PAGES), self.capacity + 1)
        c = self.config
        if self._pool_keys is None:
            shape = (size, c.num_kv_heads, self.block, c.head_dim)
            zeros = lambda: tuple(jnp.zeros(shape, self.dtype) for _ in range(c.num_layers))
            self._pool_keys, self._pool_values = zeros(), zeros()
            self._free = list(range(size - 1, 0, -1))
        else:
            self._pool_keys = _grow(self._pool_keys, pages=size)
            self._pool_values = _grow(self._pool_values, pages=size)
            self._free = list(range(size - 1, self._pool_pages - 1, -1)) + self._free
        self._pool_pages = size


def distinct_prefix_tokens(sequences: Sequence[Sequence[int]]) -> int:
    """Tokens a perfect prefix cache would compute for `sequences`: the nodes of their token trie
    (each distinct prefix once), the yardstick for `SamplerStats.prefilled_tokens`."""
    root: dict = {}
    count = 0
    for seq in sequences:
        node = root
        for t in seq:
            nxt = node.get(t)
            if nxt is None:
                nxt = node[t] = {}
                count += 1
            node = nxt
    return count
