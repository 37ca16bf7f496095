"""The refilling sampler: rows take the next work item when theirs ends; a shared prefix is
prefilled once. `Sampler(..., refill=True)` (sampler.py) runs a call through `sample` here.

Why: real solutions end anywhere from a few dozen to hundreds of tokens, and a batch that decodes
until its longest row ends spends most of its steps on rows that have finished; and every prompt of
a few-shot call starts with the same exemplars, which the plain path prefills, stores and reads
once per row.

How a call runs:
1. Work items are (prompt, sample) pairs, prompt-major. The longest token prefix common to all
   prompts (when at least `min_shared_prefix` tokens, and leaving each prompt one token of its
   own) is the *shared prefix*; the rest of each prompt is its *suffix*.
2. Prefill (jitted, one program): the shared prefix once (one row, left-padded to a multiple of
   a quarter of its power of two), then every suffix against it, left-padded into a power-of-two
   bucket Ps. A suffix's padding is not written to the cache (a per-row write index starts each
   row's real tokens right after the prefix): padding between the prefix and the suffix would
   otherwise evict the prefix's last steps from the local layers' ring buffers, which a sliding
   window still sees. What a row needs to start a prompt's sample (its suffix's global-layer keys
   and values, its local layers' ring buffers, the logits of its last token, its first free cache
   step) is kept in a *bank*, one entry per prompt; the prefix's global-layer keys and values are
   kept once, without a batch dimension, and every decode step reads them once for all rows
   (models/cache.py, models/gemma2.py). Without a shared prefix the layout is the plain path's.
   The same program fills the decode rows with the first work items.
3. Decode (jitted `lax.while_loop`, state donated): every step feeds one token per row, each row
   at its own cache step (a per-row write index), then rows whose item is not finished book the
   next token under their item's key. A row whose item ended takes the next pending item in the
   same loop, before the step's forward pass: its slot gets the bank entry (the suffix's keys,
   values and positions, the ring buffers; the positions after the suffix set to -1, so nothing of
   the previous item stays visible: masking is positional), its item's key, and the item's first
   token, chosen from the bank's logits. So a row never idles while items are pending, and no
   host round trip is needed to refill (a host-driven refill every few steps would idle rows for
   half that many steps on average, and synchronise the host each time).
4. Once no item is pending, finished rows can only idle. When at most a quarter of the rows per
   data shard still run, the loop exits, the running rows are gathered into a batch a quarter the
   size, and decoding resumes (down to `_MIN_SHARD_ROWS` rows per shard): the long tail of a few
   long solutions runs at the cost of a small batch. Each row count is one more compilation.

Data parallelism: rows and prompts are split over the data axes as in the plain path, and each data
shard keeps its own queue, its own prompts' items only, so refills and the shrinking gather never
move data between devices (the per-shard logic is `vmap`ped over a leading shard axis, which XLA
partitions along it). On several processes each passes its own prompts and gets its own back.

Results are those of the plain path (sampler.py), token for token for the same (seed, prompt id,
sample index): sample j of prompt id p draws its t-th token with fold_in(fold_in(fold_in(rng, p),
j), t), t counting the item's own tokens, whichever row runs it and whenever; every row attends
over its own prompt and tokens only. (Up to float rounding of differently shaped computations,
as between batchings of the plain path.) A row is flagged OUT_OF_CACHE when its own cache steps
(shared prefix, suffix bucket, generated tokens) reach `cache_length`.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils

from wcse_jax import parallel
from wcse_jax.models import cache as cache_lib
from wcse_jax.models import gemma2
from wcse_jax.sampling.buckets import pow2
from wcse_jax.sampling.choosers import Chooser
from wcse_jax.sampling.sampler import (MIN_BUCKET, FinishReason, SampleOutput, Sampler,
                                       head_logits, seed_key_data)
from wcse_jax.sampling.stops import StopMatcher

_rows = parallel.constrain_rows  # (short: nearly every array below is constrained)

_SHRINK = 4  # rows shrink by this factor once no item is pending and few rows still run
_MIN_SHARD_ROWS = 8  # ... but not below this many rows per data shard


@flax.struct.dataclass
class _Bank:
  """What a row needs to start a sample of prompt p, [prompts, ...] (read-only while decoding)."""
  cache: cache_lib.Cache  # each prompt's ring buffers and own global steps (Ps)
  logits: jax.Array  # [prompts, V] float32, after the prompt's last token
  start: jax.Array  # [prompts] int32, the cache step of the first generated token
  prompt_lengths: jax.Array  # [prompts] int32, the position of the first generated token
  keys: jax.Array  # [prompts] fold_in(rng, prompt id)
  count: jax.Array  # [shards] int32, work items per data shard


@flax.struct.dataclass
class _State:
  """The decode loop's carry: R rows (cache slots) and the items' results; donated."""
  cache: cache_lib.Cache  # [R] rows, a per-row index; no shared prefix (passed beside)
  last: jax.Array  # [R] int32, the token fed at the next step
  positions: jax.Array  # [R] int32, its position
  keys: jax.Array  # [R] the row's item's PRNG key
  stop_state: jax.Array  # [R] int32 automaton state (stops.py)
  step: jax.Array  # [R] int32, tokens its item has generated
  item: jax.Array  # [R] int32, its item's index within its shard
  done: jax.Array  # [R] bool: its item has ended (or it never had one)
  next: jax.Array  # [shards] int32, each shard's next pending item
  tokens: jax.Array  # [shards * I, T] int32, items in prompt-major order
  logprobs: jax.Array  # [shards * I, T] float32
  lengths: jax.Array  # [shards * I] int32
  reasons: jax.Array  # [shards * I] int32 FinishReason
  max_new: jax.Array  # [] int32
  row_steps: jax.Array  # [] int32, forward steps x rows run so far (SampleOutput.decode_row_steps)


def _split(x: jax.Array, shards: int) -> jax.Array:
  """[shards * n, ...] -> [shards, n, ...]: the leading axis per data shard."""
  return x.reshape((shards, x.shape[0] // shards) + x.shape[1:])


def _merge(x: jax.Array) -> jax.Array:
  return x.reshape((-1,) + x.shape[2:])


def _per_shard(fn, shards: int, *arrays: jax.Array) -> jax.Array:
  """fn applied to each data shard's block of every array ([shards * n, ...] in and out)."""
  return _merge(jax.vmap(fn)(*(_split(a, shards) for a in arrays)))


def _choose(logits: jax.Array, keys: jax.Array, step: jax.Array, stop_state: jax.Array,
            max_new: jax.Array, chooser: Chooser, stop_table: jax.Array | None,
            eos_ids: tuple[int, ...]) -> tuple[jax.Array, ...]:
  """Each row's next token from `logits` [n, V] under key fold_in(key, step): (token, its
  log-prob, the stop automaton's next state, the FinishReason it causes or NONE)."""
  token = chooser(logits, jax.vmap(jax.random.fold_in)(keys, step))
  logprob = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), token[:, None], axis=-1)[:, 0]
  if stop_table is None:
    hit = jnp.zeros(token.shape, bool)
  else:
    nxt = stop_table[stop_state, token]
    stop_state, hit = jnp.maximum(nxt, 0), nxt < 0
  reason = jnp.select(
      [jnp.isin(token, jnp.asarray(eos_ids, jnp.int32)), hit, step + 1 >= max_new],
      [FinishReason.EOS, FinishReason.STOP, FinishReason.MAX_TOKENS], FinishReason.NONE)
  return token, logprob, stop_state, reason.astype(jnp.int32)


def _record(s: _State, shards: int, item: jax.Array, column: jax.Array, token: jax.Array,
            logprob: jax.Array, reason: jax.Array, active: jax.Array) -> _State:
  """Books token `column` of each active row's item ([shards * n] arguments, items per shard)."""
  items = s.lengths.shape[0] // shards
  item = jnp.where(active, item, items)  # out of range: dropped

  def put(out, i, c, value):
    return out.at[i, c].set(value, mode="drop")

  def put1(out, i, value):
    return out.at[i].set(value, mode="drop")
  return s.replace(
      tokens=_per_shard(put, shards, s.tokens, item, column, token),
      logprobs=_per_shard(put, shards, s.logprobs, item, column, logprob),
      lengths=_per_shard(put1, shards, s.lengths, item, column + 1),
      reasons=_per_shard(put1, shards, s.reasons, item, reason))


def _refill(s: _State, bank: _Bank, width: int, end: int, chooser: Chooser,
            stop_table: jax.Array | None, eos_ids: tuple[int, ...], num_samples: int) -> _State:
  """Up to `width` finished rows per shard take their shard's next pending items."""
  shards = bank.count.shape[0]
  rows = s.done.shape[0] // shards

  def pick(done, nxt, count):
    dst = jnp.argsort(~done, stable=True)[:width]  # free rows first, in row order
    n = jnp.minimum(jnp.minimum(jnp.sum(done), count - nxt), width)
    take = jnp.arange(width) < n
    return jnp.where(take, dst, rows), nxt + jnp.arange(width), take, nxt + n
  dst, item, take, nxt = jax.vmap(pick)(_split(s.done, shards), s.next, bank.count)
  prompt = jnp.where(take, item // num_samples, 0)  # within the shard
  sample = item % num_samples
  gather = lambda a: jax.vmap(lambda a_d, p_d: a_d[p_d])(_split(a, shards), prompt)
  dst, item, take, sample = (_merge(a) for a in (dst, item, take, sample))

  keys = jax.vmap(jax.random.fold_in)(_merge(gather(bank.keys)), sample)
  zeros = jnp.zeros(keys.shape, jnp.int32)
  token, logprob, stop_state, reason = _choose(_merge(gather(bank.logits)), keys, zeros, zeros,
                                               s.max_new, chooser, stop_table, eos_ids)
  start = _merge(gather(bank.start))
  reason = jnp.where((reason == FinishReason.NONE) & (start >= end), FinishReason.OUT_OF_CACHE,
                     reason)
  s = _record(s, shards, item, zeros, token, logprob, reason, take)

  def put(a, value, time_axis=None):
    """a[dst] = value per shard (a's first `value.shape[time_axis]` steps when given)."""
    def one(a_d, dst_d, v_d):
      if time_axis is None:
        return a_d.at[dst_d].set(v_d.astype(a_d.dtype), mode="drop")
      where = (dst_d,) + (slice(None),) * (time_axis - 1) + (slice(0, v_d.shape[time_axis]),)
      return a_d.at[where].set(v_d.astype(a_d.dtype), mode="drop")
    return _per_shard(one, shards, a, dst, value)
  src = jax.tree.map(lambda a: _merge(gather(a)), dict(  # the bank's cache less its index
      local_k=bank.cache.local_k, local_v=bank.cache.local_v, global_k=bank.cache.global_k,
      global_v=bank.cache.global_v, local_pos=bank.cache.local_pos,
      global_pos=bank.cache.global_pos))
  own = s.cache.length - bank.cache.length
  # Positions after the suffix to -1: the previous item's keys there are never attended again.
  global_pos = jnp.concatenate(
      [src["global_pos"], jnp.full((dst.shape[0], own), -1, jnp.int32)], axis=1)
  cache = s.cache.replace(
      local_k=tuple(put(a, v) for a, v in zip(s.cache.local_k, src["local_k"])),
      local_v=tuple(put(a, v) for a, v in zip(s.cache.local_v, src["local_v"])),
      global_k=tuple(put(a, v, 3) for a, v in zip(s.cache.global_k, src["global_k"])),
      global_v=tuple(put(a, v, 2) for a, v in zip(s.cache.global_v, src["global_v"])),
      local_pos=put(s.cache.local_pos, src["local_pos"]),
      global_pos=put(s.cache.global_pos, global_pos),
      index=put(s.cache.index, start))
  return s.replace(
      cache=cache, last=put(s.last, token),
      positions=put(s.positions, _merge(gather(bank.prompt_lengths))),
      keys=put(s.keys, keys), stop_state=put(s.stop_state, stop_state),
      step=put(s.step, jnp.ones_like(zeros)), item=put(s.item, item),
      done=put(s.done, reason != FinishReason.NONE), next=nxt)


def _prefill(model: gemma2.Gemma2, chooser: Chooser, eos_ids: tuple[int, ...], pad_id: int,
             num_samples: int, shards: int, rows: int, row_length: int, out_len: int,
             params: Any, prefix_tokens: jax.Array | None, prefix_positions: jax.Array | None,
             tokens: jax.Array, positions: jax.Array, prompt_lengths: jax.Array,
             prompt_ids: jax.Array, valid: jax.Array, key_data: jax.Array, max_new: jax.Array,
             stop_table: jax.Array | None) -> tuple[_State, _Bank, tuple | None]:
  """Shared prefix once, every suffix against it, then the first `rows` items' rows."""
  cfg, dtype = model.config, model.dtype
  batch, bucket = tokens.shape
  prefix_len = 0 if prefix_tokens is None else prefix_tokens.shape[1]
  span = prefix_len + row_length  # a row's cache steps: its ring buffers' reach
  suffix_cache = cache_lib.init_cache(cfg, batch, bucket, dtype, window=span)
  prefix = None
  if prefix_tokens is not None:
    one = cache_lib.init_cache(cfg, 1, prefix_len, dtype, window=span)
    pre = gemma2.forward(model, params, prefix_tokens, prefix_positions, cache=one).cache
    prefix = (tuple(k[0] for k in pre.global_k), tuple(v[0] for v in pre.global_v),
              pre.global_pos[0])
    ring = lambda bufs: tuple(_rows(jnp.repeat(b, batch, axis=0)) for b in bufs)
    # Each suffix's real tokens go right after the prefix (its padding, which precedes them in
    # the chunk, is not written: a per-row index), so the ring buffers keep the prefix's last
    # steps and its own: the suffix then fills its own global steps from 0.
    own = jnp.sum(positions >= 0, axis=1).astype(jnp.int32)
    suffix_cache = suffix_cache.replace(
        local_k=ring(pre.local_k), local_v=ring(pre.local_v),
        local_pos=_rows(jnp.repeat(pre.local_pos, batch, axis=0)),
        index=_rows(prefix_len - bucket + own), prefix_k=prefix[0], prefix_v=prefix[1],
        prefix_pos=prefix[2])
  out = gemma2.forward(model, params, _rows(tokens), _rows(positions),
                       cache=cache_lib.constrain(suffix_cache), return_hidden=True)
  base = jax.random.wrap_key_data(key_data)
  bank = _Bank(
      cache=cache_lib.constrain(out.cache.replace(prefix_k=None, prefix_v=None, prefix_pos=None)),
      logits=_rows(head_logits(model, params, out.hidden[:, -1])),
      start=_rows(jnp.broadcast_to(out.cache.index, (batch,)).astype(jnp.int32)),
      prompt_lengths=prompt_lengths.astype(jnp.int32),
      keys=jax.vmap(lambda p: jax.random.fold_in(base, p))(prompt_ids),
      count=jnp.sum(_split(valid, shards), axis=1).astype(jnp.int32) * num_samples)

  items = batch * num_samples
  cache = cache_lib.init_cache(cfg, rows, row_length, dtype, window=span)
  state = _State(
      cache=cache_lib.constrain(cache.replace(index=jnp.zeros((rows,), jnp.int32))),
      last=_rows(jnp.zeros((rows,), jnp.int32)), positions=_rows(jnp.zeros((rows,), jnp.int32)),
      keys=bank.keys[jnp.zeros((rows,), jnp.int32)],
      stop_state=_rows(jnp.zeros((rows,), jnp.int32)), step=_rows(jnp.zeros((rows,), jnp.int32)),
      item=_rows(jnp.zeros((rows,), jnp.int32)), done=_rows(jnp.ones((rows,), bool)),
      next=_rows(jnp.zeros((shards,), jnp.int32)),
      tokens=_rows(jnp.full((items, out_len), pad_id, jnp.int32)),
      logprobs=_rows(jnp.zeros((items, out_len), jnp.float32)),
      lengths=_rows(jnp.zeros((items,), jnp.int32)), reasons=_rows(jnp.zeros((items,), jnp.int32)),
      max_new=max_new, row_steps=jnp.zeros((), jnp.int32))
  state = _refill(state, bank, rows // shards, prefix_len + row_length, chooser, stop_table,
                  eos_ids, num_samples)
  return state, bank, prefix


def _decode(model: gemma2.Gemma2, chooser: Chooser, eos_ids: tuple[int, ...], num_samples: int,
            width: int, shrink_to: int, params: Any, state: _State, bank: _Bank,
            prefix: tuple | None, stop_table: jax.Array | None) -> _State:
  """Steps until every item has ended, or (shrink_to > 0) until no item is pending and at most
  `shrink_to` rows per shard still run."""
  shards = bank.count.shape[0]
  prefix_len = 0 if prefix is None else prefix[2].shape[0]
  end = prefix_len + state.cache.length

  def pending(s: _State) -> jax.Array:
    return s.next < bank.count

  def running(s: _State) -> jax.Array:
    live = jnp.sum(~_split(s.done, shards), axis=1)
    go = jnp.any(pending(s)) | jnp.any(live > 0)
    if shrink_to:
      go &= jnp.any(pending(s)) | (jnp.max(live) > shrink_to)
    return go

  def step(s: _State) -> _State:
    free = jnp.any(_split(s.done, shards), axis=1) & pending(s)
    s = jax.lax.cond(jnp.any(free), lambda s: _refill(s, bank, width, end, chooser, stop_table,
                                                       eos_ids, num_samples), lambda s: s, s)
    cache = s.cache
    if prefix is not None:
      cache = cache.replace(prefix_k=prefix[0], prefix_v=prefix[1], prefix_pos=prefix[2])
    out = gemma2.forward(model, params, s.last[:, None], s.positions[:, None], cache=cache)
    run = ~s.done
    index = jnp.where(run, s.cache.index + 1, s.cache.index)  # finished rows stay put
    token, logprob, stop_state, reason = _choose(out.logits[:, 0], s.keys, s.step, s.stop_state,
                                                 s.max_new, chooser, stop_table, eos_ids)
    reason = jnp.where((reason == FinishReason.NONE) & (index >= end), FinishReason.OUT_OF_CACHE,
                       reason)
    s = _record(s, shards, s.item, s.step, token, logprob, reason, run)
    new_cache = out.cache.replace(index=index, prefix_k=None, prefix_v=None, prefix_pos=None)
    return s.replace(cache=cache_lib.constrain(new_cache), last=jnp.where(run, token, s.last),
                     positions=s.positions + run, stop_state=jnp.where(run, stop_state,
                                                                       s.stop_state),
                     step=s.step + run, done=s.done | (run & (reason != FinishReason.NONE)),
                     row_steps=s.row_steps + s.done.shape[0])

  return jax.lax.while_loop(running, step, state)


def _shrink(state: _State, shards: int, rows: int) -> _State:
  """The rows still running (and finished ones to fill up), `rows` per shard."""
  keep = jax.vmap(lambda done: jnp.argsort(done, stable=True)[:rows])(_split(state.done, shards))
  take = lambda a: _merge(jax.vmap(lambda a_d, k_d: a_d[k_d])(_split(a, shards), keep))
  row_fields = dict(cache=state.cache, last=state.last, positions=state.positions,
                    keys=state.keys, stop_state=state.stop_state, step=state.step,
                    item=state.item, done=state.done)
  return state.replace(**jax.tree.map(take, row_fields))


_STATIC = ("model", "chooser", "eos_ids", "num_samples")
_prefill_jit = jax.jit(_prefill, static_argnames=_STATIC + ("pad_id", "shards", "rows",
                                                            "row_length", "out_len"))
_decode_jit = jax.jit(_decode, static_argnames=_STATIC + ("width", "shrink_to"),
                      donate_argnames=("state",))
_shrink_jit = jax.jit(_shrink, static_argnames=("shards", "rows"))


def shared_prefix(prompts: Sequence[np.ndarray], minimum: int) -> int:
  """Length of the longest token prefix common to every prompt (of every process), leaving each
  prompt at least one token of its own; 0 when shorter than `minimum` tokens."""
  shortest = min(len(p) for p in prompts) - 1
  first = prompts[0][:shortest]
  common = shortest
  for p in prompts[1:]:
    differ = np.flatnonzero(p[:common] != first[:common])
    common = int(differ[0]) if differ.size else common
  if jax.process_count() > 1:
    # Agree on the prefix itself: the shortest common length, then the processes' tokens.
    common = int(multihost_utils.process_allgather(np.int32(common)).min())
    all_tokens = multihost_utils.process_allgather(first[:common].astype(np.int64))
    differ = np.flatnonzero(np.any(all_tokens != all_tokens[:1], axis=0))
    common = int(differ[0]) if differ.size else common
  return common if common >= max(minimum, 1) else 0


def _prefix_bucket(n: int) -> int:
  """n rounded up to a quarter of its power of two (768 stays 768): the prefix is stored once,
  so finer buckets than the rows' powers of two cost little in compilations and save steps."""
  step = max(pow2(n) // 4, MIN_BUCKET)
  return -(-n // step) * step


def sample(sampler: Sampler, params: Any, prompts: list[np.ndarray], num_samples: int,
           max_new_tokens: int, chooser: Chooser, rng: int | jax.Array, stop: StopMatcher | None,
           prompt_ids: np.ndarray) -> SampleOutput:
  """Sampler.sample with refill=True (arguments checked there)."""
  lengths = np.array([len(p) for p in prompts], np.int32)
  common = shared_prefix(prompts, sampler.min_shared_prefix)
  suffixes = [p[common:] for p in prompts]

  count, longest = parallel.agree_max(len(prompts), max(len(s) for s in suffixes))
  bucket = min(max(pow2(longest), MIN_BUCKET), sampler.cache_length - common)
  prefix_len = 0 if not common else min(_prefix_bucket(common), sampler.cache_length - bucket)
  out_len = pow2(max_new_tokens)
  row_length = min(sampler.cache_length - prefix_len, bucket + out_len)
  shards, procs = sampler.data_parallel, jax.process_count()
  dp_local = max(shards // procs, 1)
  batch = -(-pow2(count) // dp_local) * dp_local
  rows = batch * num_samples if sampler.rows is None else min(sampler.rows, batch * num_samples)
  rows = -(-rows // dp_local) * dp_local
  if not common and rows >= batch * num_samples:
    # No item waits for a row and no prefix is shared: only the tail's shrinking is left to gain,
    # and it did not pay for the per-row cache writes on the workloads measured (README,
    # "Sampling"), so the call takes the plain path. The results are the same either way.
    return sampler.sample_plain(params, prompts, num_samples, max_new_tokens, chooser, rng,
                                stop, prompt_ids)

  tokens = np.full((batch, bucket), sampler.pad_id, np.int32)
  positions = np.full((batch, bucket), -1, np.int32)
  for i, s in enumerate(suffixes):
    tokens[i, bucket - len(s):] = s
    positions[i, bucket - len(s):] = np.arange(common, common + len(s))
  padded = lambda x, fill: np.concatenate([x, np.full(batch - len(x), fill, x.dtype)])
  local = dict(tokens=tokens, positions=positions, prompt_lengths=padded(lengths, 0),
               prompt_ids=padded(prompt_ids.astype(np.uint32), 0),
               valid=padded(np.ones(len(prompts), bool), False))
  prefix_tokens = prefix_positions = None
  if common:
    prefix_tokens = np.full((1, prefix_len), sampler.pad_id, np.int32)
    prefix_tokens[0, prefix_len - common:] = prompts[0][:common]
    prefix_positions = np.full((1, prefix_len), -1, np.int32)
    prefix_positions[0, prefix_len - common:] = np.arange(common)
  stop_table = None if stop is None else np.asarray(stop.table)
  static = dict(model=sampler.model, chooser=chooser, eos_ids=sampler.eos_ids,
                num_samples=num_samples)
  with parallel.activate(sampler.mesh, sampler.rules):
    inputs = parallel.global_batch(local, sampler.mesh, sampler.rules)
    state, bank, prefix = _prefill_jit(
        **static, pad_id=sampler.pad_id, shards=shards, rows=rows * procs, row_length=row_length,
        out_len=out_len, params=params, prefix_tokens=prefix_tokens,
        prefix_positions=prefix_positions, **inputs, key_data=seed_key_data(rng),
        max_new=np.int32(max_new_tokens), stop_table=stop_table)
    per_shard = rows * procs // shards
    while True:
      shrink_to = per_shard // _SHRINK if per_shard // _SHRINK >= _MIN_SHARD_ROWS else 0
      # A refill step takes up to a quarter of a shard's rows (at least 8): rows end one or two
      # at a time in steady state, and all together only at the start, which the prefill fills.
      width = min(per_shard, max(per_shard // 4, 8))
      state = _decode_jit(**static, width=width, shrink_to=shrink_to, params=params,
                          state=state, bank=bank, prefix=prefix, stop_table=stop_table)
      if not shrink_to or bool(jnp.all(state.done)):
        break
      per_shard = shrink_to
      state = _shrink_jit(state, shards=shards, rows=per_shard)

  return sampler.output(state, lengths, num_samples, max_new_tokens,
                        decode_row_steps=int(state.row_steps) // procs)


__all__ = ["sample", "shared_prefix"]
