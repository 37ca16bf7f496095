"""The official `gemma` package, imported for use as the numerical and layout reference.

Only tests, parity checks and benchmarks import this module; the core (model, sampler, training
step) never does, so it runs on images without tensorflow or the `gemma` package.

gemma 3.3.0 (the newest release on PyPI) subclasses `kauldron.checkpoints.AbstractPartialLoader`,
which kauldron 1.4.2 ships as `PartialKauldronLoader`. We alias the old name before the first
import; nothing else of gemma's checkpoint loader depends on the difference.
"""
from __future__ import annotations

import functools


@functools.cache
def gm():
  """Returns the `gemma.gm` module (the official reference implementation)."""
  from kauldron import checkpoints as kd_ckpts
  if not hasattr(kd_ckpts, "AbstractPartialLoader"):
    kd_ckpts.AbstractPartialLoader = kd_ckpts.PartialKauldronLoader
  from gemma import gm as gemma_gm
  return gemma_gm
