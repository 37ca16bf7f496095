"""Strings in, strings out: THE text API over `Sampler`, for every stage and notebook.

    texts = TextSampler(model, tokenizer, mesh=mesh)(params, ["Q: 2+2?\\nA:"], num_samples=4,
                                                     chooser=TopP(0.95), stop=["\\n\\n"]).texts

One decode policy everywhere (DESIGN §5): prompts are encoded with BOS (a prompt given as a
sequence of strings is encoded segment by segment and concatenated, the way training examples
built from segments are: see `encode_segments`), sorted by length and
sampled `batch_size` prompts per call (similar lengths share a bucket, so little padding), with a
progress bar showing samples and generated tokens/s. Results come back in the input order and do
not depend on the chunking (randomness is keyed by prompt id: pass stable `prompt_ids`, e.g.
problem indices, when one data set is split across calls or resumed).

Returned text excludes the end token and the stop string (it is cut just before the first
occurrence of any stop string; that host-side check is authoritative, see stops.py), and is
decoded in the context of its prompt so a leading SentencePiece space is kept. Returned tokens and
log-probs are the sampler's: they include the ending token. Each completion carries its FLOPs: its
share of its prompt's single prefill plus its own decode (flops.py).

`stream` yields the results one sampler call at a time, so a caller can write each chunk to disk
before the next is drawn (the sample stage resumes from its last chunk). On several processes each
passes its own prompts; every process makes the same number of sampler calls (the sampler is a
collective), padding its last ones with a one-token prompt whose samples are discarded.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Iterator, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

from wcse_jax import progress as progress_lib
from wcse_jax.models import gemma2
from wcse_jax.sampling import flops as flops_lib
from wcse_jax.sampling.choosers import Chooser, Greedy
from wcse_jax.sampling.sampler import FinishReason, Sampler
from wcse_jax.sampling.stops import StopMatcher, Tokenizer, first_stop


@dataclasses.dataclass(frozen=True)
class Completion:
  text: str
  tokens: np.ndarray  # generated ids, the ending token included
  logprobs: np.ndarray  # of those tokens (see sampler.py)
  finish_reason: FinishReason
  prompt_tokens: int  # the encoded prompt's length, BOS included
  flops: float  # its share of the prompt's prefill plus its own decode steps


@dataclasses.dataclass(frozen=True)
class Chunk:
  """One sampler call's results: completions[i] belong to the prompt at input index indices[i]."""
  indices: list[int]
  completions: list[list[Completion]]
  flops: float


@dataclasses.dataclass(frozen=True)
class TextResult:
  completions: list[list[Completion]]  # [prompt][sample], in the order the prompts were given
  flops: float  # spent by all the calls (flops.py)
  generated_tokens: int

  @property
  def texts(self) -> list[list[str]]:
    return [[c.text for c in row] for row in self.completions]


def encode_segments(tokenizer: Tokenizer, prompt: str | Sequence[str]) -> list[int]:
  """BOS + the ids of `prompt`; a sequence of strings is encoded one segment at a time and the
  ids concatenated, so a text (say a verifier's question after a solution) has the same ids
  wherever it appears, whatever precedes it."""
  if isinstance(prompt, str):
    return list(tokenizer.encode(prompt, add_bos=True))
  ids = [tokenizer.bos_id]
  for segment in prompt:
    ids += list(tokenizer.encode(segment))
  return ids


class TextSampler:
  """A Sampler bound to a tokenizer: the tokenizer's EOS ends rows and its pad id pads.

  extra_eos_ids: further end tokens (e.g. an end-of-turn id).
  batch_size: prompts per sampler call.
  rows: decode rows per process and call (Sampler.rows); fewer than batch_size x num_samples lets
    a row whose sample ended take the next (prompt, sample) item, which is what saves the steps
    of rows that would otherwise idle until the call's longest sample ends; None: one row per
    item (the most memory, no refill within a call).
  """

  def __init__(self, model: gemma2.Gemma2, tokenizer: Tokenizer, *, mesh: Any = None,
               cache_length: int | None = None, extra_eos_ids: Sequence[int] = (),
               batch_size: int = 64, rows: int | None = None):
    if batch_size < 1:
      raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    self.tokenizer = tokenizer
    self.batch_size = batch_size
    # The refilling path (refill.py): the same results as the plain one, faster when samples
    # end at different lengths or the prompts share their few-shot exemplars.
    self.sampler = Sampler(model, mesh=mesh, eos_ids=(tokenizer.eos_id, *extra_eos_ids),
                           pad_id=tokenizer.pad_id, cache_length=cache_length, refill=True,
                           rows=rows)
    self._matchers: dict[tuple[str, ...], StopMatcher] = {}

  def stop_matcher(self, stop: Sequence[str]) -> StopMatcher | None:
    """The compiled matcher for these stop strings (built once per set, about a second for a
    256k vocabulary)."""
    stop = tuple(stop)
    if not stop:
      return None
    if stop not in self._matchers:
      self._matchers[stop] = StopMatcher.from_strings(
          stop, self.tokenizer, self.sampler.model.config.vocab_size)
    return self._matchers[stop]

  def stream(self, params: Any, prompts: Sequence[str | Sequence[str]], num_samples: int = 1,
             max_new_tokens: int = 256, chooser: Chooser = Greedy(), seed: int = 0,
             stop: Sequence[str] = (), prompt_ids: Sequence[int] | None = None,
             progress: bool = True, desc: str = "sample") -> Iterator[Chunk]:
    """Samples `num_samples` completions per prompt, yielding one Chunk per sampler call."""
    if isinstance(prompts, str) or isinstance(stop, str):
      raise ValueError("prompts and stop must be sequences (of strings, or of segment lists), "
                       "not a single string")
    stop = tuple(stop)
    matcher = self.stop_matcher(stop)
    encoded = [encode_segments(self.tokenizer, p) for p in prompts]
    ids = np.arange(len(prompts)) if prompt_ids is None else np.asarray(prompt_ids)
    if ids.shape != (len(prompts),):
      raise ValueError(f"prompt_ids has shape {ids.shape}, expected ({len(prompts)},)")
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    chunks = [order[lo:lo + self.batch_size] for lo in range(0, len(order), self.batch_size)]
    calls = len(chunks)
    if jax.process_count() > 1:
      calls = int(np.max(multihost_utils.process_allgather(np.int32(calls))))
    config = self.sampler.model.config
    bar = progress_lib.bar(total=len(prompts) * num_samples, desc=desc, unit="sample",
                           enabled=progress)
    generated, start = 0, time.perf_counter()
    for call in range(calls):
      if call >= len(chunks):  # This process is done; keep the collective call count equal.
        self.sampler.sample(params, [[self.tokenizer.bos_id]], num_samples, max_new_tokens,
                            chooser, rng=seed, stop=matcher)
        continue
      chunk = chunks[call]
      out = self.sampler.sample(params, [encoded[i] for i in chunk], num_samples, max_new_tokens,
                                chooser, rng=seed, stop=matcher, prompt_ids=ids[chunk])
      completions = []
      for row, i in enumerate(chunk):
        plen = len(encoded[i])
        prefill_share = flops_lib.prefill_flops(config, [plen]) / num_samples
        completions.append([
            self._completion(encoded[i], out.tokens[row, j, :out.lengths[row, j]],
                             out.logprobs[row, j, :out.lengths[row, j]],
                             FinishReason(out.finish_reasons[row, j]), stop,
                             prefill_share + flops_lib.decode_flops(config, [plen],
                                                                    [out.lengths[row, j]]))
            for j in range(num_samples)])
      generated += int(out.lengths.sum())
      bar.update(len(chunk) * num_samples)
      bar.set_postfix(tokens_per_s=f"{generated / (time.perf_counter() - start):.0f}")
      yield Chunk(indices=list(chunk), completions=completions, flops=out.flops)
    bar.close()

  def __call__(self, params: Any, prompts: Sequence[str | Sequence[str]], num_samples: int = 1,
               max_new_tokens: int = 256, chooser: Chooser = Greedy(), seed: int = 0,
               stop: Sequence[str] = (), prompt_ids: Sequence[int] | None = None,
               progress: bool = True, desc: str = "sample") -> TextResult:
    """All of `stream`'s chunks gathered in input order."""
    results: list[list[Completion] | None] = [None] * len(prompts)
    flops = 0.0
    for chunk in self.stream(params, prompts, num_samples, max_new_tokens, chooser, seed, stop,
                             prompt_ids, progress, desc):
      flops += chunk.flops
      for i, row in zip(chunk.indices, chunk.completions):
        results[i] = row
    generated = sum(len(c.tokens) for row in results for c in row)
    return TextResult(completions=results, flops=flops, generated_tokens=generated)

  def _completion(self, prompt: list[int], tokens: np.ndarray, logprobs: np.ndarray,
                  reason: FinishReason, stop: tuple[str, ...], flops: float) -> Completion:
    body = tokens[:-1] if reason == FinishReason.EOS else tokens
    text = self._decode_after(prompt, body.tolist())
    cut = first_stop(text, stop)
    if cut is not None:
      text, reason = text[:cut], FinishReason.STOP
    elif reason == FinishReason.STOP:
      # The device matcher saw a stop that the decoded text does not contain: this tokenizer's
      # token texts do not concatenate to its decoded text. Keep the full text, say so.
      logging.warning("stop matched on device but not in the decoded text %r; the tokenizer's "
                      "per-token texts disagree with decode()", text[-80:])
    return Completion(text=text, tokens=tokens, logprobs=logprobs, finish_reason=reason,
                      prompt_tokens=len(prompt), flops=flops)

  def _decode_after(self, prompt: list[int], generated: list[int]) -> str:
    """The generated text in context, so a leading space (SentencePiece "▁") is kept."""
    before = self.tokenizer.decode(prompt)
    full = self.tokenizer.decode(prompt + generated)
    return full[len(before):] if full.startswith(before) else self.tokenizer.decode(generated)


__all__ = ["TextSampler", "TextResult", "Chunk", "Completion", "encode_segments"]
