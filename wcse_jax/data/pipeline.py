"""Plain-Python iterators over (prompt, target) pairs, for code that does not want tf.data.

`pairs(task, split)` yields {"id", "inputs", "targets"} strings: inputs is the (k-shot) prompt from
prompts.build_prompt, targets the reference solution as the completion that follows it.
`tokenized(...)` yields the same with token ids: inputs = [bos] + ids(prompt), targets =
ids(target) + [eos] (the seqio tasks in seqio_tasks.py produce exactly these ids). Host sharding
(`shard=(index, count)`) takes every count-th example; shuffling is per epoch, seeded.
"""
from __future__ import annotations

import random
from typing import Iterator

import numpy as np

from wcse_jax.data import prompts
from wcse_jax.data.example import Task


def pairs(task: Task, split: str, *, num_shots: int = 0, seed: int = 0) -> Iterator[dict]:
  for ex in task.examples(split):
    yield {"id": ex.id, "inputs": prompts.build_prompt(task, ex, num_shots, seed),
           "targets": prompts.target(task, ex.solution)}


def tokenized(task: Task, split: str, tokenizer, *, num_shots: int = 0, seed: int = 0,
              shuffle_seed: int | None = None, repeat: bool = False,
              shard: tuple[int, int] = (0, 1)) -> Iterator[dict]:
  """Token ids per example (numpy int32), optionally shuffled per epoch, sharded and repeated."""
  index, count = shard
  if not 0 <= index < count:
    raise ValueError(f"shard index {index} is not in [0, {count})")
  items = [p for i, p in enumerate(pairs(task, split, num_shots=num_shots, seed=seed))
           if i % count == index]
  epoch = 0
  while True:
    order = list(range(len(items)))
    if shuffle_seed is not None:
      random.Random(f"{shuffle_seed}:{epoch}").shuffle(order)
    for i in order:
      p = items[i]
      yield {"id": p["id"],
             "inputs": np.asarray(tokenizer.encode(p["inputs"], add_bos=True), np.int32),
             "targets": np.asarray(tokenizer.encode(p["targets"], add_eos=True), np.int32)}
    epoch += 1
    if not repeat:
      return
