"""The GenRM algorithmic tasks: `last_letter_concat` and `word_sorting` (papers.md section 2(c)).

Train and validation lists have lengths {2, 3, 4}; the test split is out of distribution: length 6
for last-letter concatenation and 5 for word sorting. Both carry a programmatic step-by-step
solution (the SFT target and the step ground truth) and, through `verification_rationale`, a
programmatic step-by-step verification rationale (GenRM's oracle CoT for these tasks).

last_letter_concat (question and solution wording after Wei et al.'s CoT exemplars):
  Take the last letters of the words in "apple river stone" and concatenate them.
  The last letter of "apple" is "e".  ... one line per word ...
  Concatenating them is "ere".
  The answer is ere.

word_sorting (question after BIG-Bench Hard; the solution is a selection sort, one line per pick,
which is our choice: the paper's programmatic solution format is not specified):
  Sort the following words alphabetically: List: river apple stone
  The first of "river apple stone" is "apple".
  The first of "river stone" is "river".
  The first of "stone" is "stone".
  The answer is apple river stone.

Default sizes follow GenRM: 350 train problems per length for last-letter, 4096 for sorting.
Problems are deduplicated by content across all splits: the ordered word list for last-letter
concatenation, the sorted word list for sorting (two orders of the same words share the answer).
"""
from __future__ import annotations

import re
from typing import Sequence

from wcse_jax.data.example import Example, Step
from wcse_jax.data.synthetic import SyntheticTask, counts_by_length

WORDS = tuple("""
apple river stone cloud table window garden pencil bottle candle forest island mirror pocket
rabbit saddle tiger violin wagon yellow anchor basket camera desert engine falcon guitar hammer
jacket kettle ladder magnet needle orange parrot pepper rocket silver tomato turtle velvet walnut
zipper bridge castle dragon feather glove helmet jungle lemon meadow nickel ocean pillow quartz
ribbon shadow thunder tunnel valley whistle button carpet dolphin eagle fabric ginger harbor
iceberg jewel kitten lantern marble noodle oyster planet puzzle raven sandal ticket umbrella
vessel wizard branch cactus donkey empire fossil goblet hollow insect kernel lizard mitten
napkin olive pirate radish salmon temple unicorn voyage wallet yogurt barrel cherry drum fiddle
grape honey ivory jigsaw koala lobster mango nectar orbit pebble quiver rattle spider trumpet
vortex wheat beacon cobalt dagger ember glacier hazel igloo juniper kayak lotus maple nutmeg
oasis prism quill reef sparrow tulip urchin vanilla willow blossom comet dune fern grove
""".split())

_LAST_RE = re.compile(r'^The last letter of\s*"([^"]*)"\s*is\s*"([^"]*)"\s*\.?$')
_CONCAT_RE = re.compile(r'^Concatenating them is\s*"([^"]*)"\s*\.?$')
_FIRST_RE = re.compile(r'^The first of\s*"([^"]*)"\s*is\s*"([^"]*)"\s*\.?$')


class _WordListTask(SyntheticTask):
  """Common knobs: list lengths per split and counts per length."""
  default_test_lengths: tuple[int, ...] = ()
  default_train_per_length = 0

  def __init__(self, seed: int = 0, train_lengths: Sequence[int] = (2, 3, 4),
               test_lengths: Sequence[int] | None = None,
               num_train_per_length: int | None = None, num_validation_per_length: int = 50,
               num_test_per_length: int = 500, vocabulary: Sequence[str] = WORDS):
    super().__init__(seed)
    self.train_lengths = tuple(int(n) for n in train_lengths)
    self.test_lengths = tuple(int(n) for n in (test_lengths or self.default_test_lengths))
    self.vocabulary = tuple(vocabulary)
    if len(set(self.vocabulary)) < max(self.train_lengths + self.test_lengths):
      raise ValueError(f"{self.name}: the vocabulary has fewer distinct words than the longest "
                       f"list ({max(self.train_lengths + self.test_lengths)})")
    self.per_length = {
        "train": self.default_train_per_length if num_train_per_length is None
                 else num_train_per_length,
        "validation": num_validation_per_length, "test": num_test_per_length}

  def _plan(self, split):
    lengths = self.test_lengths if split == "test" else self.train_lengths
    return counts_by_length(lengths, self.per_length[split])

  def _draw(self, rng, split, index, length):
    words = rng.sample(self.vocabulary, length)
    question, steps, answer = self._render(words)
    solution = "\n".join([s.text for s in steps] + [f"The answer is {answer}."])
    return Example(id=f"{self.name}/{split}/{index:06d}", question=question, answer=answer,
                   solution=solution, steps=tuple(steps), split=split,
                   meta={"words": list(words), "length": length})

  def _dedupe_key(self, example):
    return " ".join(self._content(example.meta["words"]))


class LastLetterConcat(_WordListTask):
  """Concatenate the last letters of a list of words."""
  name = "last_letter_concat"
  default_test_lengths = (6,)
  default_train_per_length = 350

  def _content(self, words):
    return words  # the order matters: it is the answer's order

  def _render(self, words):
    question = (f'Take the last letters of the words in "{" ".join(words)}" '
                f"and concatenate them.")
    steps = [Step(f'The last letter of "{w}" is "{w[-1]}".', w[-1]) for w in words]
    answer = "".join(w[-1] for w in words)
    steps.append(Step(f'Concatenating them is "{answer}".', answer))
    return question, steps, answer

  def _is_step_line(self, line):
    return line.startswith("The last letter of") or line.startswith("Concatenating")

  def _step_key(self, line):
    m = _LAST_RE.match(line)
    if m:
      return ("last", m[1], m[2])
    m = _CONCAT_RE.match(line)
    return ("concat", m[1]) if m else None


class WordSorting(_WordListTask):
  """Sort a list of words alphabetically."""
  name = "word_sorting"
  default_test_lengths = (5,)
  default_train_per_length = 4096

  def _content(self, words):
    return sorted(words)  # any order of the same words has the same answer

  def _render(self, words):
    question = f"Sort the following words alphabetically: List: {' '.join(words)}"
    remaining, steps = list(words), []
    while remaining:
      first = min(remaining)
      steps.append(Step(f'The first of "{" ".join(remaining)}" is "{first}".', first))
      remaining.remove(first)
    return question, steps, " ".join(sorted(words))

  def _is_step_line(self, line):
    return line.startswith("The first of")

  def _step_key(self, line):
    m = _FIRST_RE.match(line)
    return None if m is None else (tuple(m[1].split()), m[2])
