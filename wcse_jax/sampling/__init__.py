"""The sampling engine: jitted prefill-once / N-samples decode, the scorer, choosers, stops, FLOPs.

Only jax, flax and numpy are needed here (the text API adds tqdm); the `gemma` package is never
imported by this package (wcse_jax/reference/ adapts it, for tests and benchmarks only).
"""
from wcse_jax.sampling.choosers import Chooser, Greedy, Temperature, TopK, TopP
from wcse_jax.sampling.sampler import FinishReason, SampleOutput, Sampler
from wcse_jax.sampling.score import ScoreOutput, Scorer
from wcse_jax.sampling.stops import StopMatcher

__all__ = ["Chooser", "Greedy", "Temperature", "TopK", "TopP", "FinishReason", "SampleOutput",
           "Sampler", "ScoreOutput", "Scorer", "StopMatcher"]
