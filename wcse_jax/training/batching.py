"""Fixed-shape numpy batches from variable-length examples, so the step compiles once.

An example is {"tokens": ids, "loss_weight": per-token weights (same length; default 0)}.
`completion_example` builds one from a prompt and a completion. Two layouts, both [rows, length]:
- padded: one example per row, right-padded (positions -1, tokens 0, weight 0);
- packed: examples placed first-fit into rows, each a segment (segment_ids 1, 2, ... in a row,
  0 on padding; positions restart at 0 per segment), which the weighted_nll objective and the
  model keep apart.
The last batch of a stream is completed with empty rows (weight 0), never dropped. An example
longer than `length` is an error (truncating it would silently train on a cut completion).
`epochs` is the endless SFT stream: epoch e is the examples shuffled by seed + e, packed, so the
stream is a deterministic function of (examples, seed) and a resumed run sees the same batches.
"""
from __future__ import annotations

import itertools
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np


def completion_example(prompt: Sequence[int], completion: Sequence[int],
                       weight: float = 1.0) -> dict:
  """Tokens prompt + completion with `weight` on every completion token and 0 on the prompt."""
  tokens = np.concatenate([np.asarray(prompt, np.int32), np.asarray(completion, np.int32)])
  loss_weight = np.zeros(len(tokens), np.float32)
  loss_weight[len(prompt):] = weight
  return {"tokens": tokens, "loss_weight": loss_weight}


def _fields(example: Mapping, length: int) -> tuple[np.ndarray, np.ndarray]:
  tokens = np.asarray(example["tokens"], np.int32)
  weight = np.asarray(example.get("loss_weight", np.zeros(len(tokens))), np.float32)
  if tokens.ndim != 1 or weight.shape != tokens.shape:
    raise ValueError(f"example: tokens must be 1-D and loss_weight the same shape; got "
                     f"{tokens.shape} and {weight.shape}")
  if len(tokens) > length:
    raise ValueError(f"example of {len(tokens)} tokens does not fit rows of length {length}")
  return tokens, weight


def _empty(rows: int, length: int, packed: bool) -> dict[str, np.ndarray]:
  batch = {"tokens": np.zeros((rows, length), np.int32),
           "positions": np.full((rows, length), -1, np.int32),
           "loss_weight": np.zeros((rows, length), np.float32)}
  if packed:
    batch["segment_ids"] = np.zeros((rows, length), np.int32)
  return batch


def pad_rows(examples: Sequence[Mapping], length: int,
             rows: int | None = None) -> dict[str, np.ndarray]:
  """One example per row, right-padded to `length`; `rows` (>= len(examples)) adds empty rows."""
  rows = len(examples) if rows is None else rows
  if rows < len(examples):
    raise ValueError(f"pad_rows: {len(examples)} examples do not fit {rows} rows")
  batch = _empty(rows, length, packed=False)
  for i, example in enumerate(examples):
    tokens, weight = _fields(example, length)
    n = len(tokens)
    batch["tokens"][i, :n], batch["loss_weight"][i, :n] = tokens, weight
    batch["positions"][i, :n] = np.arange(n)
  return batch


def batches(examples: Iterable[Mapping], rows: int, length: int, *,
            pack: bool = True) -> Iterator[dict]:
  """A stream of [rows, length] batches, packed (first fit within the batch) or padded."""
  if not pack:
    chunk = []
    for example in examples:
      chunk.append(example)
      if len(chunk) == rows:
        yield pad_rows(chunk, length)
        chunk = []
    if chunk:
      yield pad_rows(chunk, length, rows)
    return
  batch, used, segments = _empty(rows, length, True), np.zeros(rows, int), np.zeros(rows, int)
  for example in examples:
    tokens, weight = _fields(example, length)
    n = len(tokens)
    fits = np.flatnonzero(used + n <= length)
    if not len(fits):
      yield batch
      batch, used, segments = _empty(rows, length, True), np.zeros(rows, int), np.zeros(rows, int)
      fits = [0]
    row = fits[0]
    start = used[row]
    segments[row] += 1
    batch["tokens"][row, start:start + n] = tokens
    batch["loss_weight"][row, start:start + n] = weight
    batch["positions"][row, start:start + n] = np.arange(n)
    batch["segment_ids"][row, start:start + n] = segments[row]
    used[row] += n
  if used.any():
    yield batch


def epochs(examples: Sequence[Mapping], rows: int, length: int, seed: int) -> Iterator[dict]:
  """Endless packed batches over shuffled epochs of `examples` (see the module docstring)."""
  if not examples:
    raise ValueError("no training examples (did the filter keep nothing?)")
  for epoch in itertools.count():
    order = np.random.default_rng(seed + epoch).permutation(len(examples))
    yield from batches((examples[i] for i in order), rows, length)


__all__ = ["completion_example", "pad_rows", "batches", "epochs"]
