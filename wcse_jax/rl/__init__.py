"""Best-of-N-aware fine-tuning (papers.md §3, DESIGN §9): per-sequence weights for weighted_nll.

`weights` turns the rewards and verifier scores of each prompt's on-policy samples into one weight
per sample, pure numpy, each estimator tested against the exact gradient of a tiny categorical
policy; the train step consumes them through the `weighted_nll` objective.
"""
