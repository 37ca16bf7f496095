"""seqio registrations and the plain-Python iterators produce the same ids; data/ without TF."""
import subprocess
import sys

import numpy as np
import pytest

from wcse_jax.data import pipeline
from wcse_jax.data.tasks import get_task
from wcse_jax.tokenizer import BOS_ID, EOS_ID, train_tokenizer

KNOBS = {"arith_chain": dict(num_train=40, num_validation=6, num_test=6),
         "word_sorting": dict(num_train_per_length=10, num_validation_per_length=2,
                              num_test_per_length=3)}


@pytest.fixture(scope="module")
def vocab(tmp_path_factory):
  texts = []
  for name, knobs in KNOBS.items():
    for p in pipeline.pairs(get_task(name, **knobs), "train"):
      texts.append(p["inputs"] + p["targets"])
  path = str(tmp_path_factory.mktemp("tok") / "tokenizer.model")
  return train_tokenizer(texts * 5, 400, path)


def test_data_package_imports_without_tensorflow():
  code = ("import sys\n"
          "from wcse_jax.data import tasks, prompts, grading, records, sandbox, pipeline, answers\n"
          "from wcse_jax import tokenizer\n"
          "t = tasks.get_task('arith_chain', num_train=5, num_validation=1, num_test=1)\n"
          "e = t.examples('test')[0]\n"
          "assert grading.grade(t, e, e.solution).correct\n"
          "bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'seqio')]\n"
          "assert not bad, bad\n")
  subprocess.run([sys.executable, "-c", code], check=True)


def test_pipeline_tokenized_sharded_shuffled(vocab):
  task = get_task("arith_chain", **KNOBS["arith_chain"])
  items = list(pipeline.tokenized(task, "train", vocab))
  assert len(items) == 40
  first = items[0]
  assert first["inputs"][0] == BOS_ID and first["targets"][-1] == EOS_ID
  assert first["inputs"].dtype == np.int32
  assert vocab.decode(first["targets"]) == " " + task.examples("train")[0].solution
  shards = [list(pipeline.tokenized(task, "train", vocab, shard=(i, 3))) for i in range(3)]
  assert sorted(x["id"] for s in shards for x in s) == sorted(x["id"] for x in items)
  a = [x["id"] for x in pipeline.tokenized(task, "train", vocab, shuffle_seed=1)]
  b = [x["id"] for x in pipeline.tokenized(task, "train", vocab, shuffle_seed=1)]
  assert a == b and a != [x["id"] for x in items] and sorted(a) == sorted(x["id"] for x in items)
  stream = pipeline.tokenized(task, "train", vocab, shuffle_seed=1, repeat=True)
  two_epochs = [next(stream)["id"] for _ in range(80)]
  assert two_epochs[:40] == a and sorted(two_epochs[40:]) == sorted(a) and two_epochs[40:] != a
  with pytest.raises(ValueError, match="shard index 3"):
    next(pipeline.tokenized(task, "train", vocab, shard=(3, 3)))


def test_seqio_tasks_match_the_plain_iterator(vocab):
  import seqio
  from wcse_jax.data import seqio_tasks
  names = seqio_tasks.register(vocab.path, task_knobs=KNOBS, num_shots=2, prefix="wcse_test")
  assert set(names) == {f"wcse_test.{n}" for n in ("arith_chain", "compositional_gsm", "gsm8k",
                                                    "humaneval", "last_letter_concat", "math",
                                                    "math500", "word_sorting")}
  assert seqio.get_mixture_or_task("wcse_test.humaneval").splits == ("test",)
  for name in KNOBS:
    sq = seqio.get_mixture_or_task(f"wcse_test.{name}")
    assert set(sq.splits) == {"train", "validation", "test"}
    assert set(sq.output_features) == {"inputs", "targets"}
    got = list(sq.get_dataset(sequence_length=None, split="validation", shuffle=False)
               .as_numpy_iterator())
    want = list(pipeline.tokenized(get_task(name, **KNOBS[name]), "validation", vocab,
                                   num_shots=2))
    assert len(got) == len(want) > 0
    for g, w in zip(got, want):
      assert g["id"].decode() == w["id"]
      np.testing.assert_array_equal(g["inputs"], w["inputs"])
      np.testing.assert_array_equal(g["targets"], w["targets"])
