"""Scalar metrics to a JSONL file and TensorBoard event files, written by process 0 only.

TensorBoard events are written with the `tensorboard` package's record writer and protos on a
plain file: its EventFileWriter opens files through `tensorboard.compat.tf`, which imports all of
tensorflow when it is installed (as does flax.metrics.tensorboard), and the core stays light.
"""
from __future__ import annotations

import json
import os
import socket
import time
from typing import Mapping

import jax

from wcse_jax.files import read_jsonl


class MetricWriter:
  """`write(step, {name: float})` appends to <directory>/metrics.jsonl and the TB events there.

  resume_step: the step a resumed run restarts after; records of later steps left in
  metrics.jsonl by the interrupted run are dropped (the resumed run writes them again), so every
  step appears once. TensorBoard shows the newest value of a step anyway.
  """

  def __init__(self, directory: str, tensorboard: bool = True, resume_step: int | None = None):
    self.active = jax.process_index() == 0
    self._jsonl = self._events = None
    if not self.active:
      return
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "metrics.jsonl")
    if resume_step is not None and os.path.exists(path):
      kept = [r for r in read_jsonl(path) if r["step"] <= resume_step]
      with open(path + ".tmp", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in kept)
      os.replace(path + ".tmp", path)
    self._jsonl = open(path, "a")
    if tensorboard:
      from tensorboard.compat.proto import event_pb2
      from tensorboard.summary.writer.record_writer import RecordWriter
      name = f"events.out.tfevents.{time.time():.0f}.{socket.gethostname()}.{os.getpid()}"
      self._events = RecordWriter(open(os.path.join(directory, name), "wb"))
      self._events.write(event_pb2.Event(wall_time=time.time(),
                                         file_version="brain.Event:2").SerializeToString())

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.active:
      return
    scalars = {k: float(v) for k, v in scalars.items()}
    self._jsonl.write(json.dumps({"step": int(step), **scalars}) + "\n")
    self._jsonl.flush()
    if self._events is not None:
      from tensorboard.compat.proto import event_pb2, summary_pb2
      values = [summary_pb2.Summary.Value(tag=k, simple_value=v) for k, v in scalars.items()]
      self._events.write(event_pb2.Event(
          wall_time=time.time(), step=int(step),
          summary=summary_pb2.Summary(value=values)).SerializeToString())
      self._events.flush()

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
    if self._events is not None:
      self._events.close()


__all__ = ["MetricWriter"]
