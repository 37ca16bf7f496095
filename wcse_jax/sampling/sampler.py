"""The sampling engine: prefill once per prompt, N samples per prompt, one jitted decode loop.

    sampler = Sampler(model, mesh=mesh, eos_ids=(tokenizer.eos_id,), pad_id=tokenizer.pad_id)
    out = sampler.sample(params, prompts, num_samples=16, max_new_tokens=256,
                         chooser=TopP(0.95), rng=seed, stop=StopMatcher.from_strings(...))

How a call runs:
1. Prompts (host-local lists of token ids) are left-padded into a power-of-two length bucket P,
   and their count into a power-of-two multiple of the data-parallel size, so shapes (and
   compilations) repeat across calls. All prompts end at time step P - 1; positions count real
   tokens only (padding gets -1, which the model never attends to).
2. Prefill (jitted) runs each distinct prompt once, takes the logits of its last token, repeats
   the KV cache N times (row i -> rows i*N .. i*N+N-1) and chooses every sample's first token.
3. Decode (jitted, state donated) is one `lax.while_loop` feeding one token per row per step;
   it exits as soon as every row has finished.

That is the plain path. `Sampler(..., refill=True)` runs the same call through refill.py instead
(the text API's default): rows whose sample ended take the next pending (prompt, sample) item
inside the decode loop, rows are dropped once none is pending, and a prefix common to all prompts
(few-shot exemplars) is prefilled and stored once; the results are the plain path's.

A row finishes on an end token (`eos_ids`), on a stop sequence (`StopMatcher`), after
`max_new_tokens`, or when the cache is full. The cache holds `min(cache_length, P + T)` time steps
(T: `max_new_tokens` rounded up to a power of two) shared by all rows, padding included; a row still
running when the shared index reaches the end is flagged OUT_OF_CACHE, never silently cut.

Returned tokens include the token that ended the row (the end token, or the token completing a
stop sequence); positions after it hold `pad_id`. Log-probs are those of the chosen token under the
model's own distribution, log_softmax(logits) at temperature 1 before any top-k/top-p truncation,
so they match the training log-likelihood whatever the chooser; 0 after the end.

Randomness: sample j of the prompt with id p draws its t-th token with key
fold_in(fold_in(fold_in(rng, p), j), t), so results do not depend on how prompts were batched or
padded, nor on how many samples were asked for (up to float rounding of differently shaped
matmuls). Pass stable `prompt_ids` (e.g. problem indices) when one dataset is split across calls.
"""
from __future__ import annotations

import dataclasses
import enum
from typing import Any, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, PartitionSpec

from wcse_jax import parallel
from wcse_jax.models import cache as cache_lib
from wcse_jax.models import gemma2
from wcse_jax.sampling import flops as flops_lib
from wcse_jax.sampling.buckets import pow2
from wcse_jax.sampling.choosers import Chooser, Greedy
from wcse_jax.sampling.stops import StopMatcher

_rows = parallel.constrain_rows  # (short: nearly every array below is constrained)

MIN_BUCKET = 8


class FinishReason(enum.IntEnum):
  NONE = 0  # still running (never returned for a real row)
  EOS = 1  # produced one of `eos_ids`
  STOP = 2  # completed a stop sequence
  MAX_TOKENS = 3  # produced max_new_tokens
  OUT_OF_CACHE = 4  # the cache filled up before the row finished


@dataclasses.dataclass(frozen=True)
class SampleOutput:
  """Host-local results, indexed [prompt, sample, ...] in the order the prompts were given."""
  tokens: np.ndarray  # [P, N, max_new_tokens] int32, pad_id after each length
  logprobs: np.ndarray  # [P, N, max_new_tokens] float32, 0 after each length
  lengths: np.ndarray  # [P, N] int32 generated tokens, the ending token included
  finish_reasons: np.ndarray  # [P, N] int32 FinishReason values
  prompt_lengths: np.ndarray  # [P] int32
  prefill_flops: float
  decode_flops: float
  # Forward steps x rows the decode loop ran for this process's rows, finished and padding rows
  # included: 1 - sum(lengths - 1) / decode_row_steps is the share spent on finished rows.
  decode_row_steps: int = 0

  @property
  def flops(self) -> float:
    """All FLOPs spent by this call (see flops.py for what is counted)."""
    return self.prefill_flops + self.decode_flops


@flax.struct.dataclass
class _State:
  """The decode loop's carry (rows = prompts x samples); donated between the two jitted stages."""
  cache: cache_lib.Cache
  tokens: jax.Array  # [rows, T] int32
  logprobs: jax.Array  # [rows, T] float32
  last: jax.Array  # [rows] int32, the token fed at the next step
  positions: jax.Array  # [rows] int32, its position
  keys: jax.Array  # [rows] per-sample PRNG keys
  stop_state: jax.Array  # [rows] int32 automaton state (stops.py)
  lengths: jax.Array  # [rows] int32
  reasons: jax.Array  # [rows] int32 FinishReason
  done: jax.Array  # [rows] bool (padding rows start done)
  step: jax.Array  # [] int32, tokens generated so far by the rows still running
  max_new: jax.Array  # [] int32


def head_logits(model: gemma2.Gemma2, params: Any, hidden: jax.Array) -> jax.Array:
  """The model's output head on the last position only.

  The model's forward computes logits at every position ([B, P, vocab]; for a 256k vocabulary
  that is gigabytes for long prompts), and XLA does not narrow that matmul to a slice of its
  result. We ask for the final-norm hidden states instead (the full logits are then dead code)
  and apply the same tied embedding and soft-cap here; tests check it against the full forward.
  """
  embedding = params["embedder"]["input_embedding"]
  logits = jnp.einsum("BD,VD->BV", hidden, embedding.astype(hidden.dtype),
                      preferred_element_type=jnp.float32)
  cap = model.config.final_softcap
  return jnp.tanh(logits / cap) * cap


def _choose_and_record(s: _State, logits: jax.Array, chooser: Chooser, stop_table: jax.Array | None,
                       eos_ids: tuple[int, ...], pad_id: int) -> _State:
  """Chooses every row's next token from `logits` [rows, V] and books it for the running rows."""
  keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(s.keys, s.step)
  token = chooser(logits, keys)
  logprob = jnp.take_along_axis(jax.nn.log_softmax(logits, axis=-1), token[:, None], axis=-1)[:, 0]
  running = ~s.done
  column = (0, s.step)
  tokens = jax.lax.dynamic_update_slice(s.tokens, jnp.where(running, token, pad_id)[:, None],
                                        column)
  logprobs = jax.lax.dynamic_update_slice(s.logprobs, jnp.where(running, logprob, 0.0)[:, None],
                                          column)
  if stop_table is None:
    stop_state, hit = s.stop_state, jnp.zeros_like(running)
  else:
    nxt = stop_table[s.stop_state, token]
    stop_state, hit = jnp.maximum(nxt, 0), nxt < 0
  reason = jnp.select(
      [jnp.isin(token, jnp.asarray(eos_ids, jnp.int32)), hit, s.step + 1 >= s.max_new],
      [FinishReason.EOS, FinishReason.STOP, FinishReason.MAX_TOKENS], FinishReason.NONE)
  reasons = jnp.where(running, reason, s.reasons)
  return s.replace(tokens=tokens, logprobs=logprobs, last=token, stop_state=stop_state,
                   lengths=s.lengths + running, reasons=reasons,
                   done=s.done | (reasons != FinishReason.NONE), step=s.step + 1)


def _prefill(model: gemma2.Gemma2, chooser: Chooser, eos_ids: tuple[int, ...], pad_id: int,
             num_samples: int, cache_size: int, out_len: int, params: Any, tokens: jax.Array,
             prompt_lengths: jax.Array, prompt_ids: jax.Array, valid: jax.Array,
             key_data: jax.Array, max_new: jax.Array, stop_table: jax.Array | None) -> _State:
  batch, bucket = tokens.shape
  positions = jnp.arange(bucket)[None, :] - (bucket - prompt_lengths)[:, None]
  positions = jnp.where(positions >= 0, positions, -1).astype(jnp.int32)
  cache = cache_lib.constrain(cache_lib.init_cache(model.config, batch, cache_size, model.dtype))
  out = gemma2.forward(model, params, _rows(tokens), _rows(positions), cache=cache,
                       return_hidden=True)
  logits = head_logits(model, params, out.hidden[:, -1])

  # N samples share one prefill: repeat the cache and the last logits, row i -> i*N .. i*N+N-1.
  repeat = lambda x: _rows(jnp.repeat(x, num_samples, axis=0))
  rows = batch * num_samples
  sample_index = jnp.tile(jnp.arange(num_samples), batch)
  base = jax.random.wrap_key_data(key_data)
  keys = jax.vmap(lambda p, j: jax.random.fold_in(jax.random.fold_in(base, p), j))(
      repeat(prompt_ids), sample_index)
  state = _State(
      cache=cache_lib.constrain(out.cache.repeat(num_samples)),
      tokens=_rows(jnp.full((rows, out_len), pad_id, jnp.int32)),
      logprobs=_rows(jnp.zeros((rows, out_len), jnp.float32)),
      last=jnp.zeros((rows,), jnp.int32), positions=repeat(prompt_lengths).astype(jnp.int32),
      keys=keys, stop_state=jnp.zeros((rows,), jnp.int32), lengths=jnp.zeros((rows,), jnp.int32),
      reasons=jnp.zeros((rows,), jnp.int32), done=~repeat(valid), step=jnp.zeros((), jnp.int32),
      max_new=max_new)
  return _choose_and_record(state, repeat(logits), chooser, stop_table, eos_ids, pad_id)


def _decode(model: gemma2.Gemma2, chooser: Chooser, eos_ids: tuple[int, ...], pad_id: int,
            params: Any, state: _State, stop_table: jax.Array | None) -> _State:
  cache_size = state.cache.length

  def running(s: _State) -> jax.Array:
    # Every row has ended, or the shared cache index reached the end (then the rows still
    # running are flagged below).
    return ~jnp.all(s.done) & (s.cache.index < cache_size)

  def step(s: _State) -> _State:
    out = gemma2.forward(model, params, s.last[:, None], s.positions[:, None], cache=s.cache)
    s = s.replace(cache=cache_lib.constrain(out.cache), positions=s.positions + 1)
    return _choose_and_record(s, out.logits[:, 0], chooser, stop_table, eos_ids, pad_id)

  state = jax.lax.while_loop(running, step, state)
  out_of_cache = ~state.done
  return state.replace(
      reasons=jnp.where(out_of_cache, FinishReason.OUT_OF_CACHE, state.reasons),
      done=jnp.ones_like(state.done))


_STATIC = ("model", "chooser", "eos_ids", "pad_id")
_prefill_jit = jax.jit(_prefill, static_argnames=_STATIC + ("num_samples", "cache_size", "out_len"))
_decode_jit = jax.jit(_decode, static_argnames=_STATIC, donate_argnames=("state",))


def seed_key_data(rng: int | jax.Array) -> np.ndarray:
  """The raw key data of an int seed or a typed key (what the jitted programs take)."""
  if isinstance(rng, (int, np.integer)):
    rng = jax.random.key(int(rng))
  elif not jnp.issubdtype(rng.dtype, jax.dtypes.prng_key):
    raise ValueError("rng must be an int seed or a typed key (jax.random.key), "
                     f"got dtype {rng.dtype}")
  return np.asarray(jax.random.key_data(rng))


@dataclasses.dataclass(frozen=True)
class Sampler:
  """Binds a model to a mesh and its end-token conventions; `sample` does the work.

  model: the Gemma2 module (its dtype is the compute and cache dtype).
  mesh: the training mesh (rows are split over its data axes, parameters stay as they are
    sharded); None runs on the first device.
  eos_ids: tokens that end a row (e.g. (tokenizer.eos_id,) plus an end-of-turn id).
  pad_id: fills prompt padding and the tokens after a row's end.
  cache_length: the most time steps a row may occupy, padded prompt plus generated tokens;
    None: the preset's max_len.
  refill: run calls through refill.py: a row whose sample ended takes the next pending
    (prompt, sample) item, finished rows are dropped once none is pending, and a prefix common to
    all prompts is prefilled and stored once. Same results (see refill.py). A call where no item
    would wait for a row and no prefix is shared takes the plain path anyway (refilling would
    only shrink the rows for the tail, which did not pay for its per-row cache writes on the
    workloads measured); False: always the plain path described above, every row decoding until
    the longest ends.
  rows: with refill, the decode rows per process (a memory bound; fewer rows than items is what
    lets rows refill); None: one per item, as the plain path.
  min_shared_prefix: with refill, the shortest common prompt prefix (tokens) stored once.
  """
  model: gemma2.Gemma2
  mesh: Mesh | None = None
  eos_ids: tuple[int, ...] = (1,)
  pad_id: int = 0
  cache_length: int | None = None
  rules: tuple = parallel.DEFAULT_RULES
  refill: bool = False
  rows: int | None = None
  min_shared_prefix: int = 32

  def __post_init__(self):
    if self.mesh is None:
      object.__setattr__(self, "mesh", parallel.make_mesh((1, 1, 1), jax.devices()[:1]))
    object.__setattr__(self, "eos_ids", tuple(int(t) for t in self.eos_ids))
    if self.cache_length is None:
      object.__setattr__(self, "cache_length", self.model.config.max_len)
    if self.cache_length < 2:
      raise ValueError(f"cache_length must be >= 2, got {self.cache_length}")
    if self.rows is not None and self.rows < 1:
      raise ValueError(f"rows must be >= 1 (or None: one per work item), got {self.rows}")

  @property
  def data_parallel(self) -> int:
    """How many ways rows are split (the mesh axes the "batch" rule maps to)."""
    spec = parallel.batch_sharding(self.mesh, 1, self.rules).spec[0]
    axes = (spec,) if isinstance(spec, str) else tuple(spec or ())
    return int(np.prod([self.mesh.shape[a] for a in axes]))

  def sample(self, params: Any, prompts: Sequence[Sequence[int]], num_samples: int,
             max_new_tokens: int, chooser: Chooser = Greedy(), rng: int | jax.Array = 0,
             stop: StopMatcher | None = None,
             prompt_ids: Sequence[int] | None = None) -> SampleOutput:
    """Samples `num_samples` completions of each prompt (lists of token ids, BOS included).

    On several processes each passes its own prompts and gets its own rows back.
    """
    prompts = [np.asarray(p, np.int64).reshape(-1) for p in prompts]
    self._check(prompts, num_samples, max_new_tokens, stop)
    if prompt_ids is None:
      prompt_ids = np.arange(len(prompts))
    prompt_ids = np.asarray(prompt_ids, np.int64)
    if prompt_ids.shape != (len(prompts),):
      raise ValueError(f"prompt_ids has shape {prompt_ids.shape}, expected ({len(prompts)},)")
    if self.refill:
      from wcse_jax.sampling import refill  # pylint: disable=import-outside-toplevel
      # (refill.py builds on this module's pieces, so it is imported here, not at the top.)
      return refill.sample(self, params, prompts, num_samples, max_new_tokens, chooser, rng, stop,
                           prompt_ids)
    return self.sample_plain(params, prompts, num_samples, max_new_tokens, chooser, rng, stop,
                             prompt_ids)

  def sample_plain(self, params: Any, prompts: list[np.ndarray], num_samples: int,
                   max_new_tokens: int, chooser: Chooser, rng: int | jax.Array,
                   stop: StopMatcher | None, prompt_ids: np.ndarray) -> SampleOutput:
    """`sample` on the plain path (arguments checked there)."""
    lengths = np.array([len(p) for p in prompts], np.int32)

    count, longest = parallel.agree_max(len(prompts), lengths.max())
    bucket = min(max(pow2(longest), MIN_BUCKET), self.cache_length)
    dp_local = max(self.data_parallel // jax.process_count(), 1)
    batch = -(-pow2(count) // dp_local) * dp_local
    out_len = pow2(max_new_tokens)
    cache_size = min(self.cache_length, bucket + out_len)

    tokens = np.full((batch, bucket), self.pad_id, np.int32)
    for i, p in enumerate(prompts):
      tokens[i, bucket - len(p):] = p
    padded = lambda x, fill: np.concatenate([x, np.full(batch - len(x), fill, x.dtype)])
    local = dict(tokens=tokens, prompt_lengths=padded(lengths, 0),
                 prompt_ids=padded(prompt_ids.astype(np.uint32), 0),
                 valid=padded(np.ones(len(prompts), bool), False))
    stop_table = None if stop is None else np.asarray(stop.table)
    static = dict(model=self.model, chooser=chooser, eos_ids=self.eos_ids, pad_id=self.pad_id)
    with parallel.activate(self.mesh, self.rules):
      inputs = parallel.global_batch(local, self.mesh, self.rules)
      state = _prefill_jit(**static, num_samples=num_samples, cache_size=cache_size,
                           out_len=out_len, params=params, **inputs, key_data=seed_key_data(rng),
                           max_new=np.int32(max_new_tokens), stop_table=stop_table)
      state = _decode_jit(**static, params=params, state=state, stop_table=stop_table)

    # Every row runs every step; `step` counts the first token, chosen in the prefill.
    return self.output(state, lengths, num_samples, max_new_tokens,
                       decode_row_steps=(int(state.step) - 1) * batch * num_samples)

  def output(self, state: Any, prompt_lengths: np.ndarray, num_samples: int,
             max_new_tokens: int, decode_row_steps: int) -> SampleOutput:
    """This process's [prompts, samples] results from a finished decode state (either path's:
    its tokens, logprobs, lengths and reasons are [items, ...], item = prompt x samples + j)."""
    cfg = self.model.config
    n, shape = len(prompt_lengths), (len(prompt_lengths), num_samples)
    host = lambda x: self._to_host(x)[:n * num_samples]
    out_lengths = host(state.lengths).reshape(shape)
    return SampleOutput(
        tokens=host(state.tokens)[:, :max_new_tokens].reshape(shape + (max_new_tokens,)),
        logprobs=host(state.logprobs)[:, :max_new_tokens].reshape(shape + (max_new_tokens,)),
        lengths=out_lengths, finish_reasons=host(state.reasons).reshape(shape),
        prompt_lengths=prompt_lengths,
        prefill_flops=flops_lib.prefill_flops(cfg, prompt_lengths),
        decode_flops=flops_lib.decode_flops(cfg, np.repeat(prompt_lengths, num_samples),
                                            out_lengths.reshape(-1)),
        decode_row_steps=decode_row_steps)

  def _check(self, prompts: list[np.ndarray], num_samples: int, max_new_tokens: int,
             stop: StopMatcher | None) -> None:
    vocab = self.model.config.vocab_size
    if not prompts:
      raise ValueError("no prompts given")
    if not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
      raise ValueError(f"num_samples must be an integer >= 1, got {num_samples!r}")
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 1:
      raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    for i, p in enumerate(prompts):
      if p.size == 0:
        raise ValueError(f"prompt {i} is empty (it needs at least a BOS token)")
      if p.size > self.cache_length:
        raise ValueError(f"prompt {i} has {p.size} tokens, more than cache_length="
                         f"{self.cache_length}")
      if p.min() < 0 or p.max() >= vocab:
        raise ValueError(f"prompt {i} has token ids outside [0, {vocab}): "
                         f"{sorted(set(p[(p < 0) | (p >= vocab)].tolist()))[:5]}")
    if stop is not None and stop.vocab_size != vocab:
      raise ValueError(f"stop matcher was built for a vocabulary of {stop.vocab_size}, "
                       f"the model has {vocab}")

  def _to_host(self, x: jax.Array) -> np.ndarray:
    """This process's rows of a row-sharded global array."""
    if jax.process_count() == 1:
      return np.asarray(x)
    spec = PartitionSpec(parallel.batch_sharding(self.mesh, 1, self.rules).spec[0])
    return np.asarray(multihost_utils.global_array_to_host_local_array(x, self.mesh, spec))


__all__ = ["Sampler", "SampleOutput", "FinishReason"]
