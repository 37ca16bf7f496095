"""Draw solutions for a list of problems and append them as sample records (resumable).

Shared by the `sample` stage (training-split data) and the students' test-set evaluation. A
problem whose samples are all on disk is skipped; one that is partly there is sampled again and
only its missing indices are written. That is exact, not approximate: sample j of problem p uses
randomness derived from (seed, p, j) only, so a rerun draws the same text.

Multi-host: process i takes problems i, i + P, i + 2P, ... and writes its own shards; every
process makes the same number of sampler calls (the sampler is a collective), padding its last
ones with a one-token prompt whose samples are discarded.
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils

from wcse_jax import progress
from wcse_jax.data import prompts as prompts_lib
from wcse_jax.data import records as records_lib
from wcse_jax.data.example import Example, Task
from wcse_jax.models.loading import LoadedModel
from wcse_jax.sampling import flops as flops_lib
from wcse_jax.sampling.sampler import FinishReason, Sampler
from wcse_jax.sampling.stops import StopMatcher, first_stop


def solve(loaded: LoadedModel, sampler: Sampler, task: Task, examples: Sequence[Example],
          out_dir: str, *, num_samples: int, max_new_tokens: int, chooser: Any, seed: int,
          num_shots: int = 0, prompt_seed: int = 0, batch_prompts: int = 32,
          desc: str = "sample") -> dict[str, float]:
  """Samples `num_samples` solutions per example into record shards in `out_dir`.

  Returns counts: records written now, records already there, FLOPs spent now.
  """
  tok = loaded.tokenizer
  done = records_lib.done_keys(out_dir)
  process, processes = jax.process_index(), jax.process_count()
  todo = [(i, ex) for i, ex in enumerate(examples)
          if i % processes == process and any((ex.id, j) not in done for j in range(num_samples))]
  calls = -(-len(todo) // batch_prompts)
  if processes > 1:
    calls = int(np.max(multihost_utils.process_allgather(np.int32(calls))))
  stops = prompts_lib.stop_strings(task)
  matcher = StopMatcher.from_strings(stops, tok, loaded.config.vocab_size) if stops else None
  written, flops = 0, 0.0
  bar = progress.bar(total=len(todo) * num_samples, desc=f"{desc} {loaded.name}", unit="sample")
  with records_lib.ShardWriter(out_dir, process_index=process) as writer:
    for call in range(calls):
      chunk = todo[call * batch_prompts:(call + 1) * batch_prompts]
      if not chunk:  # this process is done; keep the collective call count equal
        sampler.sample(loaded.params, [[tok.bos_id]], num_samples, max_new_tokens, chooser=chooser,
                       rng=seed, stop=matcher)
        continue
      texts = [prompts_lib.build_prompt(task, ex, num_shots, prompt_seed) for _, ex in chunk]
      ids = [tok.encode(t, add_bos=True) for t in texts]
      out = sampler.sample(loaded.params, ids, num_samples, max_new_tokens, chooser=chooser,
                           rng=seed, stop=matcher, prompt_ids=[i for i, _ in chunk])
      flops += out.flops
      for row, ((index, ex), prompt) in enumerate(zip(chunk, texts)):
        plen = out.prompt_lengths[row]
        for j in range(num_samples):
          if (ex.id, j) in done:
            continue
          n = int(out.lengths[row, j])
          tokens = out.tokens[row, j, :n].tolist()
          text = tok.decode(tokens)
          cut = first_stop(text, stops)
          if cut is not None:
            text = text[:cut]
          reason = FinishReason(int(out.finish_reasons[row, j]))
          cost = (flops_lib.prefill_flops(loaded.config, [plen]) / num_samples
                  + flops_lib.decode_flops(loaded.config, [plen], [n]))
          writer.write({
              "problem_id": ex.id, "problem_index": index, "sample_index": j,
              "model": loaded.name, "prompt": prompt, "text": text, "tokens": tokens,
              "logprobs": np.round(out.logprobs[row, j, :n], 5).tolist(),
              "finish_reason": reason.name.lower(), "flops": cost})
          written += 1
      writer.flush()  # one shard per chunk: a crash loses at most the chunk in flight
      bar.update(len(chunk) * num_samples)
  bar.close()
  return {"written": written, "already_done": len(done), "flops": flops}
