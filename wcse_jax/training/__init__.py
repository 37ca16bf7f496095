"""Training: the state, THE train step, objectives/, a loop (checkpoints, metrics, eval, progress).

Needs only jax, flax, optax, orbax, numpy, tqdm and (lazily, for event files) tensorboard.
"""
