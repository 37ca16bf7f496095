"""Many-shot in-context learning prompts (papers.md §10), and k-shot training rows for the zoo.

Three ways to show k exemplars before a zero-shot query, in prompts.py's layout (shots joined by a
blank line, "Question: ...\\nAnswer: ..." for the qa style):
  human         each exemplar's question with the task's reference solution;
  reinforced    ... with a solution the model itself wrote and got right (its own samples,
                filtered by final answer: `pick_rationales`);
  unsupervised  PREAMBLE, then the exemplars' questions alone, then (optionally) a few solved
                `format_examples` that fix the output format, then the query.
For every method, at a given shot count and seed, the exemplars are the same problems: the first
k of a seeded permutation of one pool (`exemplar_order`), so a k-shot prompt also holds every
smaller prompt's exemplars, in the same order (nested, as the paper's prompts are). The pool is
the caller's (the many-shot stage: the problems the model solved at least once, so that the
reinforced method has a rationale for each). The query's own problem is never among its
exemplars: one with the query's id or question is skipped and the next in the order taken.

With k = 0 every method gives the plain zero-shot prompt (no preamble without questions), so the
three curves start from one point.

`k_shot_rows` lays training examples out the same way, many per row and unsegmented, so a model
trained on them attends across examples as a many-shot prompt needs (stages/zoo.py's
`zoo.k_shot_rows`).
"""
from __future__ import annotations

import random
from typing import Mapping, Sequence

import numpy as np

from wcse_jax.data import prompts
from wcse_jax.data.example import Example, Task

METHODS = ("human", "reinforced", "unsupervised")
PREAMBLE = "You will be provided questions similar to the ones below:"  # the paper's wording


def exemplar_order(pool: Sequence[Example], seed: int) -> list[Example]:
  """The pool in the `seed` order: a permutation of the pool sorted by id (so the order does not
  depend on how the pool was listed); k-shot prompts take its first k."""
  ordered = sorted(pool, key=lambda ex: ex.id)
  random.Random(f"many_shot:{seed}").shuffle(ordered)
  return ordered


def exemplars_for(order: Sequence[Example], num_shots: int, query: Example) -> list[Example]:
  """The first `num_shots` of `order`, skipping the query's own problem (same id or question)."""
  out = [ex for ex in order if ex.id != query.id and ex.question != query.question][:num_shots]
  if len(out) < num_shots:
    raise ValueError(f"many-shot prompt: {num_shots} shots asked for {query.id!r}, but the pool "
                     f"holds only {len(out)} other problems")
  return out


def unsolved(task: Task, question: str) -> str:
  """A question shown without its answer cue: the zero-shot query minus its last line
  ("Question: ...\\nAnswer:" -> "Question: ...")."""
  return prompts.query(task, question).rsplit("\n", 1)[0].rstrip()


def build(task: Task, method: str, exemplars: Sequence[Example], query: Example, *,
          rationales: Mapping[str, str] | None = None,
          format_examples: Sequence[Example] = ()) -> str:
  """The `method` prompt for `query` with `exemplars` shown (see the module docstring).

  rationales: problem id -> the model's correct solution, for "reinforced".
  format_examples: solved examples after the unsupervised method's questions (none by default).
  """
  if task.prompt_style == "code":
    raise ValueError(f"task {task.name!r} is prompted zero-shot (code completion); many-shot "
                     f"prompts need a question-answer layout")
  if method not in METHODS:
    raise ValueError(f"many-shot prompt: unknown method {method!r}; known: {METHODS}")
  solved = lambda ex, text: prompts.query(task, ex.question) + prompts.target(task, text)
  if not exemplars:
    return prompts.query(task, query.question)
  if method == "human":
    blocks = [solved(ex, ex.solution) for ex in exemplars]
  elif method == "reinforced":
    if rationales is None:
      raise ValueError("many-shot prompt: the reinforced method needs the model's rationales")
    missing = [ex.id for ex in exemplars if ex.id not in rationales]
    if missing:
      raise ValueError(f"many-shot prompt: no correct rationale for exemplar {missing[0]!r}; the "
                       f"pool must hold only problems the model solved")
    blocks = [solved(ex, rationales[ex.id]) for ex in exemplars]
  else:
    blocks = [PREAMBLE] + [unsolved(task, ex.question) for ex in exemplars]
    blocks += [solved(ex, ex.solution) for ex in format_examples]
  return "\n\n".join(blocks + [prompts.query(task, query.question)])


def pick_rationales(graded: Sequence[Mapping]) -> dict[str, str]:
  """Per problem, the correct sample with the lowest sample index: its text, stripped (the same
  choice whatever the order the records are read in)."""
  best: dict[str, tuple[int, str]] = {}
  for r in graded:
    if r["correct"] and (r["problem_id"] not in best
                         or r["sample_index"] < best[r["problem_id"]][0]):
      best[r["problem_id"]] = (r["sample_index"], r["text"].strip())
  return {pid: text for pid, (_, text) in best.items()}


def k_shot_rows(task: Task, examples: Sequence[Example], tokenizer, length: int, count: int,
                seed: int) -> list[dict]:
  """`count` training rows, each BOS + as many examples as fit in `length` tokens, laid out as a
  few-shot prompt (query + reference solution, a blank line between), drawn from seeded
  permutations of `examples`; loss weight 1 on every token but BOS (plain language modelling, as
  a pretrained model learns: the layout too, so after an answer the model writes the next
  "Question:" that the stop strings catch). Pieces are encoded separately and joined at the
  line breaks, which the tokenizer never merges across, so the ids equal those of the prompt
  text encoded whole."""
  if not examples or count < 1:
    raise ValueError(f"k_shot_rows: need examples and count >= 1, got {len(examples)} examples "
                     f"and count={count}")

  def encode(ex: Example, first: bool) -> list[int]:
    text = ("" if first else "\n\n") + prompts.query(task, ex.question)
    return tokenizer.encode(text) + tokenizer.encode(prompts.target(task, ex.solution))

  rng = random.Random(f"k_shot_rows:{seed}")
  rows: list[dict] = []
  tokens: list[int] = []  # the current row after BOS
  while True:
    order = list(range(len(examples)))
    rng.shuffle(order)
    for i in order:
      piece = encode(examples[i], first=not tokens)
      if tokens and 1 + len(tokens) + len(piece) > length:
        rows.append(_row(tokenizer.bos_id, tokens))
        if len(rows) == count:
          return rows
        tokens = []
        piece = encode(examples[i], first=True)
      if 1 + len(piece) > length:
        raise ValueError(f"k_shot_rows: an example of {len(piece)} tokens does not fit a row of "
                         f"{length}")
      tokens += piece


def _row(bos: int, tokens: list[int]) -> dict:
  weight = np.ones(len(tokens) + 1, np.float32)
  weight[0] = 0.0  # BOS is given, never predicted
  return {"tokens": np.asarray([bos] + tokens, np.int32), "loss_weight": weight}


__all__ = ["METHODS", "PREAMBLE", "exemplar_order", "exemplars_for", "unsolved", "build",
           "pick_rationales", "k_shot_rows"]
