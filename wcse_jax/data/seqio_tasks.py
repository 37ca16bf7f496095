"""seqio registrations of every task (the only module of data/ that imports tensorflow/seqio).

`register(vocab_path, ...)` adds one seqio.Task per task name, called f"{prefix}.{name}", with the
task's splits, output features "inputs" (= [bos] + prompt ids) and "targets" (= solution ids +
[eos]) on the SentencePiece vocabulary at `vocab_path`. Data sources are lazy: a real-data task
(GSM8K, MATH, ...) reads its files only when a dataset is requested, so registering everything
costs nothing; give its knobs (paths=...) through `task_knobs`.
"""
from __future__ import annotations

from typing import Mapping, Sequence

from wcse_jax.data import pipeline, tasks
from wcse_jax.tokenizer import BOS_ID


def register(vocab_path: str, *, names: Sequence[str] | None = None, num_shots: int = 0,
             exemplar_seed: int = 0, task_knobs: Mapping[str, Mapping] | None = None,
             prefix: str = "wcse_jax") -> list[str]:
  """Registers (or re-registers) the tasks; returns the seqio task names. `num_shots` and
  `exemplar_seed` choose the prompts (see prompts.build_prompt)."""
  import seqio
  import tensorflow as tf

  vocab = seqio.SentencePieceVocabulary(vocab_path)
  features = {"inputs": seqio.Feature(vocab, add_eos=False),
              "targets": seqio.Feature(vocab, add_eos=True)}
  task_knobs = dict(task_knobs or {})

  @seqio.map_over_dataset
  def prepend_bos(ex):
    ex = dict(ex)
    ex["inputs"] = tf.concat([tf.constant([BOS_ID], ex["inputs"].dtype), ex["inputs"]], 0)
    return ex

  registered = []
  for name in names or tasks.known_tasks():
    knobs = dict(task_knobs.get(name, {}))
    splits = tasks.task_splits(name, **knobs)

    def dataset_fn(split, shuffle_files, seed=None, _name=name, _knobs=knobs):
      del shuffle_files, seed  # The examples are a fixed list; shuffle downstream.
      task = tasks.get_task(_name, **_knobs)
      spec = {k: tf.TensorSpec((), tf.string) for k in ("id", "inputs", "targets")}
      return tf.data.Dataset.from_generator(
          lambda: pipeline.pairs(task, split, num_shots=num_shots, seed=exemplar_seed),
          output_signature=spec)

    seqio_name = f"{prefix}.{name}"
    if seqio_name in seqio.TaskRegistry.names():
      seqio.TaskRegistry.remove(seqio_name)
    seqio.TaskRegistry.add(
        seqio_name,
        source=seqio.FunctionDataSource(dataset_fn, splits=splits),
        preprocessors=[seqio.preprocessors.tokenize, prepend_bos,
                       seqio.preprocessors.append_eos_after_trim],
        output_features=features)
    registered.append(seqio_name)
  return registered

