"""Stop sequences, matched on device inside the decode loop, whatever the tokens that spell them.

A stop string can be split across tokens in many ways ("\\n\\n" as one token, as two, or as the
tail of "x\\n" followed by "\\nQ"), so matching the token ids of `encode(stop)` would miss most
occurrences. Instead we run an Aho-Corasick automaton over the *characters* of the stop strings and
let every token advance it by its whole text. That is precomputed on the host into one table,
`table[state, token] -> next state, or -1 when a stop string is completed inside this token`, so the
decode loop pays one gather per row and step.

A token's text is taken in context, `decode(anchor + [t])` minus `decode(anchor)`, so that tokens
whose text begins with a space (SentencePiece's "▁") keep it. Tokens whose text cannot be known on
its own (byte fragments of a multi-byte character decode to U+FFFD) reset the automaton without a
match: the device can miss a stop there, never invent one. The text API then cuts every decoded
text at the first occurrence of a stop string, which is the authoritative check, so a stop the
device missed still ends the text correctly (only the compute after it is wasted).

Stop sequences given as token ids use the same automaton with one symbol per token.
"""
from __future__ import annotations

import collections
import dataclasses
import re
from typing import Hashable, Protocol, Sequence

import numpy as np

from wcse_jax.sampling.buckets import pow2


class Tokenizer(Protocol):
  """The tokenizer interface the sampling package relies on (see wcse_jax/tokenizer.py)."""
  eos_id: int
  pad_id: int

  def encode(self, text: str, add_bos: bool = True) -> list[int]: ...

  def decode(self, ids: Sequence[int]) -> str: ...


class _Automaton:
  """Aho-Corasick over arbitrary hashable symbols; `out[q]` marks states that end a pattern."""

  def __init__(self, patterns: Sequence[Sequence[Hashable]]):
    self.goto: list[dict[Hashable, int]] = [{}]
    self.fail = [0]
    self.out = [False]
    for pattern in patterns:
      q = 0
      for symbol in pattern:
        if symbol not in self.goto[q]:
          self.goto[q][symbol] = len(self.goto)
          self.goto.append({})
          self.fail.append(0)
          self.out.append(False)
        q = self.goto[q][symbol]
      self.out[q] = True
    queue = collections.deque(self.goto[0].values())
    while queue:
      q = queue.popleft()
      for symbol, child in self.goto[q].items():
        queue.append(child)
        self.fail[child] = self.step(self.fail[q], symbol) if q else 0
        self.out[child] = self.out[child] or self.out[self.fail[child]]

  @property
  def num_states(self) -> int:
    return len(self.goto)

  def step(self, q: int, symbol: Hashable) -> int:
    while q and symbol not in self.goto[q]:
      q = self.fail[q]
    return self.goto[q].get(symbol, 0)

  def run(self, q: int, symbols: Sequence[Hashable]) -> int:
    """The state after `symbols`, or -1 as soon as a pattern is completed."""
    for symbol in symbols:
      q = self.step(q, symbol)
      if self.out[q]:
        return -1
    return q


@dataclasses.dataclass(frozen=True, eq=False)
class StopMatcher:
  """A compiled set of stop sequences for one vocabulary.

  table: [S, V] int32; S is the automaton's state count rounded up to a power of two (so sets of
    similar size share a compilation); state 0 is the start; -1 marks a completed stop.
  stops: what was compiled (strings or token-id tuples), for messages and the text API.
  """
  table: np.ndarray
  stops: tuple

  @property
  def vocab_size(self) -> int:
    return self.table.shape[1]

  @classmethod
  def from_token_sequences(cls, sequences: Sequence[Sequence[int]], vocab_size: int) -> StopMatcher:
    """Stops on exact token-id sequences (e.g. an end-of-turn marker that is one token)."""
    sequences = tuple(tuple(int(t) for t in s) for s in sequences)
    for s in sequences:
      if not s:
        raise ValueError("stop token sequences must not be empty")
      bad = [t for t in s if not 0 <= t < vocab_size]
      if bad:
        raise ValueError(f"stop token sequence {s} has ids {bad} outside the vocabulary "
                         f"[0, {vocab_size})")
    automaton = _Automaton(sequences)
    table = np.zeros((pow2(automaton.num_states), vocab_size), np.int32)
    for t in {t for s in sequences for t in s}:
      table[:automaton.num_states, t] = [automaton.run(q, (t,))
                                         for q in range(automaton.num_states)]
    return cls(table, sequences)

  @classmethod
  def from_strings(cls, stops: Sequence[str], tokenizer: Tokenizer, vocab_size: int) -> StopMatcher:
    """Stops on text, however the generated tokens happen to split it (see the module doc)."""
    stops = tuple(stops)
    if any(not isinstance(s, str) or not s for s in stops):
      raise ValueError(f"stop strings must be non-empty strings, got {stops!r}")
    automaton = _Automaton(stops)
    n = automaton.num_states
    alphabet = "".join(sorted({c for s in stops for c in s}))
    foreign = re.compile(f"[^{re.escape(alphabet)}]")
    table = np.zeros((pow2(n), vocab_size), np.int32)
    for t, text in enumerate(token_texts(tokenizer, vocab_size)):
      if text is None:
        continue  # Unknown text: back to the start state, no match (column of zeros).
      first = foreign.search(text)
      if first is None:  # Every character may belong to a stop: depends on the state.
        table[:n, t] = [automaton.run(q, text) for q in range(n)]
        continue
      # A character outside every stop string sends any state back to the start, so only the
      # part before the first such character depends on the state, and the state after the
      # token only on the part after the last one.
      last = len(text) - 1 - foreign.search(text[::-1]).start()
      rest_hit = any(s in text[first.end():] for s in stops)
      end = 0 if rest_hit else automaton.run(0, text[last + 1:])
      head = text[:first.start()]
      table[:n, t] = [-1 if (head and automaton.run(q, head) == -1) else end for q in range(n)]
    return cls(table, stops)


def token_texts(tokenizer: Tokenizer, vocab_size: int) -> list[str | None]:
  """Each token's text in context (None where it cannot be told on its own)."""
  anchor = list(tokenizer.encode("a", add_bos=False))
  base = tokenizer.decode(anchor)
  texts: list[str | None] = []
  for t in range(vocab_size):
    try:
      full = tokenizer.decode(anchor + [t])
    except (IndexError, KeyError, ValueError):  # Ids past the tokenizer's own vocabulary.
      texts.append(None)
      continue
    known = full.startswith(base) and "\ufffd" not in full
    texts.append(full[len(base):] if known else None)
  return texts


def first_stop(text: str, stops: Sequence[str]) -> int | None:
  """Index of the earliest occurrence of any stop string in `text`, or None."""
  found = [i for i in (text.find(s) for s in stops) if i >= 0]
  return min(found) if found else None


__all__ = ["StopMatcher", "Tokenizer", "token_texts", "first_stop"]
