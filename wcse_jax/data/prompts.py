"""k-shot chain-of-thought prompts, zero-shot prompts, SFT targets and stop strings.

Layouts (by `task.prompt_style`):
  "qa"    synthetic tasks and GSM8K:  "Question: {question}\\nAnswer:" + " {solution}"
  "math"  MATH / MATH500 (Minerva):   "Problem:\\n{problem}\\n\\nSolution:" + " {solution}"
  "code"  HumanEval: the function prompt itself, completed by the model (zero-shot only).
Shots are joined by a blank line, so a model that goes on past its answer starts the next
"Question:" / "Problem:" block, which is what the stop strings catch.

Exemplars always come from the train split: a permutation of it fixed by `seed`, of which a
k-shot prompt takes the first k (so prompts are nested, as many-shot ICL requires: the 8-shot
prompt contains the 4-shot one). When the prompted example is itself a train example it is
skipped, so a question never appears among its own exemplars. Evaluation splits never supply
exemplars. For GSM8K and MATH these are train problems with their reference solutions, not the
hand-written Wei et al. / Minerva exemplars (papers.md 1(c) marks those as recalled, [M]).
"""
from __future__ import annotations

import functools
import random

from wcse_jax.data.example import Example, Task

_CODE_STOPS = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")  # The Codex paper's stop set.


def query(task: Task, question: str) -> str:
  """The zero-shot prompt for one question (what the model continues)."""
  if task.prompt_style == "qa":
    return f"Question: {question}\nAnswer:"
  if task.prompt_style == "math":
    return f"Problem:\n{question}\n\nSolution:"
  if task.prompt_style == "code":
    return question
  raise ValueError(f"task {task.name!r}: unknown prompt style {task.prompt_style!r}")


def target(task: Task, solution: str) -> str:
  """The completion that follows `query(...)`: the SFT target for a solution."""
  return solution if task.prompt_style == "code" else " " + solution


def stop_strings(task: Task) -> tuple[str, ...]:
  """Strings at which a sampled completion ends (the sampler may also stop at EOS)."""
  if task.prompt_style == "qa":
    return ("\n\nQuestion:",)
  if task.prompt_style == "math":
    return ("\n\nProblem:",)
  return _CODE_STOPS


@functools.lru_cache(maxsize=64)
def _order(task: Task, seed: int) -> tuple[int, ...]:
  order = list(range(len(task.examples("train"))))
  random.Random(f"exemplars:{task.name}:{seed}").shuffle(order)
  return tuple(order)


def exemplars(task: Task, num_shots: int, seed: int = 0,
              exclude_id: str | None = None) -> list[Example]:
  """The first `num_shots` train examples of the `seed` permutation, skipping `exclude_id`."""
  if num_shots <= 0:
    return []
  if "train" not in task.splits:
    raise ValueError(f"task {task.name!r} has no train split to draw {num_shots} exemplars "
                     f"from; use num_shots=0")
  train = task.examples("train")
  out = []
  for i in _order(task, seed):
    if train[i].id != exclude_id:
      out.append(train[i])
      if len(out) == num_shots:
        return out
  raise ValueError(f"task {task.name!r}: asked for {num_shots} exemplars but train has only "
                   f"{len(out)} usable examples")


def build_prompt(task: Task, example: Example, num_shots: int = 0, seed: int = 0) -> str:
  """The k-shot (k = num_shots) chain-of-thought prompt for `example`; zero-shot when k = 0."""
  if task.prompt_style == "code" and num_shots:
    raise ValueError(f"task {task.name!r} is prompted zero-shot (code completion); "
                     f"use num_shots=0")
  shots = [query(task, e.question) + target(task, e.solution)
           for e in exemplars(task, num_shots, seed, exclude_id=example.id)]
  return "\n\n".join(shots + [query(task, example.question)])
