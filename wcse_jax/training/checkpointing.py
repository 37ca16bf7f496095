"""Orbax checkpoints of the TrainState plus the data position.

A checkpoint at step s holds the state after s updates and {"next_batch": s}: the index of the
first batch the resumed run must see. Saves are asynchronous (orbax copies the arrays to host
before `save` returns, so the step may donate them right after) and atomic (written to a
temporary folder and renamed), so a run killed at any moment resumes from the last complete one.
A checkpoint damaged on disk afterwards (a truncated file) raises files.DataError naming its step
folder, and saying how to resume from the one before it.
"""
from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp

from wcse_jax import checkpoints
from wcse_jax.training.state import TrainState


def checkpoint_manager(directory: str, *, max_to_keep: int = 3, save_every: int = 1000,
                       async_save: bool = True) -> ocp.CheckpointManager:
  """A manager keeping the newest `max_to_keep` checkpoints, saving at multiples of `save_every`."""
  if save_every < 1 or max_to_keep < 1:
    raise ValueError(f"checkpoint_manager: save_every and max_to_keep must be >= 1, got "
                     f"{save_every} and {max_to_keep}")
  options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, save_interval_steps=save_every,
                                         enable_async_checkpointing=async_save, create=True)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options,
                               item_names=("state", "data"))


def save(manager: ocp.CheckpointManager, step: int, state: TrainState, *,
         force: bool = False) -> bool:
  """Saves `state` (whose step is `step`, passed in so nothing waits for the device) if the
  step is due or `force`; returns whether a save started."""
  return manager.save(step, force=force, args=ocp.args.Composite(
      state=ocp.args.StandardSave(state), data=ocp.args.JsonSave({"next_batch": step})))


def restore_latest(manager: ocp.CheckpointManager,
                   abstract_state: TrainState) -> tuple[TrainState, int] | None:
  """(state, next_batch) from the newest complete checkpoint, restored straight into the
  shardings of `abstract_state` (`state.abstract_train_state`); None when there is none."""
  step = manager.latest_step()
  if step is None:
    return None
  folder = os.path.join(os.fspath(manager.directory), str(step))
  remedy = (f"delete {folder} to resume from the checkpoint before it, or all of "
            f"{os.fspath(manager.directory)} to start this training over")
  restored = checkpoints.read(folder, lambda: manager.restore(step, args=ocp.args.Composite(
      state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore())), remedy)
  return restored.state, int(restored.data["next_batch"])


__all__ = ["checkpoint_manager", "save", "restore_latest"]
