"""Per-sequence weights for Best-of-N-aware fine-tuning and its baselines (papers.md §3).

DESIGN §9: prompts -> n on-policy samples each -> rewards (correctness and/or verifier scores)
-> weights (here) -> `weighted_nll`. Everything is numpy on the host, between the sampler and the
step, and every estimator is tested against the exact gradient of its objective on a tiny
categorical policy (tests/rl/test_weights.py), as papers.md §3 asks.

Convention. For one prompt with samples y_1 .. y_n ~ pi(.|x), an estimator returns w_1 .. w_n
such that g = sum_i w_i grad log pi(y_i|x) estimates the gradient (ascent direction) of its
objective at x. The trainer minimises -sum_i w_i log pi(y_i|x) (weighted_nll with loss_weight =
w_i on the completion tokens), whose negative gradient is g. Batches of prompts are arrays with
the samples on the last axis, [..., n]; the result is a `Weights` of the same shape.

Advantages and clipping. `n * w_i` is the per-sample advantage A_i, the weight a sample would get
if the prompt's gradient were the plain mean (1/n) sum_i A_i grad log pi(y_i); the usual
advantage-based code (and the community BoN-RLB implementation, whose clip is 3) works in these
units, so the optional `clip` bounds |A_i|, and `Weights` reports the clip and the fraction of
the active prompts' samples it changed. weighted_nll divides by the number of weighted tokens, so
the overall scale of the weights only sets the effective learning rate.

Skipping. `Weights.active` marks the prompts that carry a gradient. Every estimator with a group
baseline gives identically zero weights to a prompt whose rewards are all equal (all right or all
wrong), so such prompts are skipped (weight 0, active False) at no cost in bias; the tests check
this by enumerating those groups too. Estimators without a baseline (SFT on correct samples,
uncentred PKPO, BoN-RLB with a known failure probability) do not vanish there and skipping would
bias them, so they skip only prompts whose weights are zero anyway; each docstring says which.

Which objective each estimator's expectation is the gradient of (E over the n samples; p is the
prompt's failure probability P[R = 0], F the CDF of the verifier score under pi):

  sft_on_correct                grad pass@1                                      exact
  reinforce                     (n-1)/n grad E[R]                                 exact (scale)
  bon_rlb_p (p_fail known)      grad log pass@N                                  exact
  bon_rlb_p (p from the group)  grad log pass@N                                  biased, measured
  bon_rlb_two_sided             UNVERIFIED; with p known, grad[log pass@N + N(p + log(1-p))]
  bon_rl_v, bon_rl_s            grad of verifier-BoN / oracle-BoN (pass@N) reward  exact
  bon_rl_v_selected             E_{pi_bon}[(R - J) grad log pi]: paper-style approximation
  bon_sft_exact (F known)       grad log pi_bon(y_expert) (no-ties formula)      exact
  bon_sft_variational           grad of the variational objective, SNIS: approximation
  pkpo (uncentred / centred)    grad pass@k / (n-k)/n grad pass@k                 exact / scale
  pass_at_k_chen (no 1/sigma)   (n-k)/(n k) grad pass@k                           exact (scale)
  best_sample_only              heuristic; for 0/1 rewards grad pass@n / sqrt(n)  exact (scale)

"exact (scale)" means unbiased for a constant (given n, k) multiple of the gradient, so the
direction over a batch of prompts is unbiased; measured biases are in the docstrings.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from wcse_jax.eval import passk


@dataclasses.dataclass(frozen=True)
class Weights:
  """Sequence weights for a batch of prompts and what was skipped or clipped.

  weights: [..., n] w_i, with sum_i w_i grad log pi(y_i) the prompt's gradient estimate; 0 on
    skipped prompts.
  active: [...] False for prompts skipped because they carry no gradient.
  clip: the bound on |n * w_i| that was applied, or None.
  clipped_fraction: the share of the active prompts' samples whose weight the clip changed.
  expert: [...] weight of the expert sequence for BoN-SFT (the weights are then those of the M
    on-policy samples); None for the RL estimators.
  """
  weights: np.ndarray
  active: np.ndarray
  clip: float | None
  clipped_fraction: float
  expert: np.ndarray | None = None


def g_bar(p_fail, n_bon: int):
  """BoN-RLB(P) weight g_N(p) = N p^(N-1) (1 - p) / (1 - p^N) (papers.md §3(b)).

  N p^(N-1) (1 - p) is grad(1 - p^N) per unit of E_{pi(.|R=1)}[grad log pi]; dividing by pass@N
  makes g_N(p) E_{pi(.|R=1)}[grad log pi] = grad log pass@N. g_N(0) = 0 for N >= 2, g_N -> 1 as
  p -> 1, g_1 = 1.
  """
  p = np.asarray(p_fail, dtype=np.float64)
  return g_plus(p, n_bon) * (1.0 - p)


def g_plus(p_fail, n_bon: int):
  """Two-sided BoN-RLB positive weight g+_N(p) = N p^(N-1) / (1 - p^N); g+ (1 - p) = g_bar.

  On on-policy positives (the unnormalised indicator 1{R=1}) it is exact:
  E_pi[g+ 1{R=1} grad log pi] = g+ grad(1 - p) = grad log(1 - p^N). It grows like 1 / (1 - p)
  as p -> 1, hence the clip. 1 - p^N is computed as -expm1(N log p) to keep it accurate there.
  """
  p = np.asarray(p_fail, dtype=np.float64)
  if np.any((p < 0) | (p >= 1)):
    raise ValueError(f"failure probabilities must lie in [0, 1), got {p}")
  with np.errstate(divide="ignore"):
    return n_bon * p ** (n_bon - 1) / -np.expm1(n_bon * np.log(p))


def g_minus(p_fail, n_bon: int):
  """Two-sided BoN-RLB negative weight magnitude g-_N(p) = N p / (1 - p) (UNVERIFIED, §3(b))."""
  p = np.asarray(p_fail, dtype=np.float64)
  if np.any((p < 0) | (p >= 1)):
    raise ValueError(f"failure probabilities must lie in [0, 1), got {p}")
  return n_bon * p / (1.0 - p)


def sft_on_correct(correct) -> Weights:
  """SFT on the correct samples (rejection-sampling fine-tuning): advantage 1 on each.

  Baseline of papers.md §3(c). w_i = 1{R_i = 1} / n, so E[sum_i w_i grad log pi(y_i)] =
  grad P[R = 1] = grad pass@1 exactly (tested). No baseline, so an all-correct prompt keeps its
  weights; only prompts without a correct sample (weights all 0) are inactive.
  """
  r = _binary(correct)
  return _finish(r, r.any(axis=-1), None)


def reinforce(rewards, *, clip: float | None = None) -> Weights:
  """Standard RL (N' = 1): REINFORCE with the per-prompt mean baseline, A_i = r_i - mean(r).

  papers.md §3(c)'s "standard RL" baseline. The mean includes r_i itself, which is correlated with
  y_i, so E[sum_i w_i grad log pi(y_i)] = (n - 1)/n grad E[R] (tested exactly): unbiased up to
  that constant; the leave-one-out baseline (RLOO) is the same weights times n / (n - 1).
  Prompts with all-equal rewards are skipped (their weights are 0).
  """
  r = _rewards(rewards)
  return _finish(r - r.mean(axis=-1, keepdims=True), ~_all_equal(r), clip)


def bon_rlb_p(correct, n_bon: int, *, p_fail=None, clip: float | None = None) -> Weights:
  """BoN-RLB(P): weight g_N(p) on the correct samples only, ascending log pass@N (papers.md §3(b)).

  papers.md's exact identity: grad(1 - p^N) = N p^(N-1) (1-p) E_{pi(.|R=1)}[grad log pi], i.e.
  g_N(p) E_{pi(.|R=1)}[grad log pi] = grad log pass@N. With the positive-conditional expectation
  estimated by the mean over the group's positives, the weight of a correct sample is
  g_N(p) / #correct; with #correct = n (1 - p) this is g+_N(p) / n, the unnormalised-indicator
  form E_pi[g+ 1{R=1} grad log pi] = grad log pass@N. So A_i = g+_N(p) 1{R_i = 1}.

  p_fail: the failure probability per prompt, if known (e.g. from a larger pool of the current
    policy, or in a test): the estimator is then exactly unbiased for grad log pass@N (tested by
    enumeration) and nothing is skipped. None (the default, and what training does): p is the
    group's fraction of failures, p_hat = 1 - #correct / n. p_hat is correlated with the sample
    it weights, so the estimate is biased. Measured exactly on the tests' 5-response toy
    (N = 4): at p = 0.757 the mean update is 0.50, 0.72 and 0.84 times grad log pass@N for
    n = 4, 6 and 8; at n = 4 the factor is 0.92 at p = 0.534 and 1.81 at p = 0.297. Binary
    rewards keep it parallel to the gradient for one prompt, but the factor depends on p, so
    across prompts it reweights them: use n well above N, or a p from a larger pool. Groups
    with all-equal rewards are skipped (for N >= 2 their weights are 0: no positives, or
    g_N(0) = 0).

  Summed over prompts this ascends sum_x log pass@N(x), which favours hard prompts more than
  sum_x pass@N(x) does (its gradient is pass@N times this one).
  """
  r = _binary(correct)
  p, active = _failure_probability(r, p_fail)
  return _finish(g_plus(p, n_bon)[..., None] * r, active, clip)


def bon_rlb_two_sided(correct, n_bon: int, *, p_fail=None, clip: float | None = 3.0) -> Weights:
  """UNVERIFIED two-sided BoN-RLB: +g+_N(p) on correct samples, -g-_N(p) = -N p/(1-p) on wrong.

  As in the community implementation papers.md §3(b) describes (LOSS_TYPE == "best_of_n"): p is
  the group's failure fraction, both weights applied as per-sample advantages to all samples,
  clipped to [-3, 3] by default. papers.md could NOT reproduce these weights as an unbiased
  gradient of pass@N; use them only as that implementation's baseline.

  What they do estimate (derived here, and tested with p known): E[g+ 1{R=1} grad log pi] =
  -g+ grad p and E[-g- 1{R=0} grad log pi] = -g- grad p, so the expected update is
  -(g+ + g-) grad p = grad[log(1 - p^N) + N (p + log(1 - p))]: log pass@N plus a term that
  rewards lowering p itself, i.e. pass@1 (d/dp of the second term is -N p / (1 - p)). With p
  estimated from the group, as here by default, it is that plus the plug-in bias.
  Groups with all-equal rewards are skipped (g- is infinite at p = 1) unless p_fail is given.
  """
  r = _binary(correct)
  p, active = _failure_probability(r, p_fail)
  advantage = np.where(r > 0, g_plus(p, n_bon)[..., None], -g_minus(p, n_bon)[..., None])
  return _finish(advantage, active, clip)


def bon_rl_v(rewards, scores, n_bon: int, *, clip: float | None = None) -> Weights:
  """Exact BoN-RL-V: unbiased gradient of the reward of the verifier-selected sample of N.

  papers.md §3(b): y* = argmax_{i <= N} r(y_i) (ties uniformly) is a function of N i.i.d. samples,
  so grad E[R(y*)] = E[(R(y*) - b) sum_{i=1}^N grad log pi(y_i)] for any b independent of them.
  The n samples of a prompt are split, in order, into G = n / N >= 2 groups of N; group g's
  outcome is R_g = the mean reward of its top-scored samples (the exact expectation over the
  uniform tie-break, a function of the samples, so still exact), its baseline b_g the mean outcome
  of the other G - 1 groups (independent of group g), and the estimate is the mean over groups:
  w_i = (R_g - b_g) / G for every i in group g, i.e. A_i = N (R_g - b_g).

  Objective: verifier Best-of-N accuracy for 0/1 rewards (what papers.md reports as "Bo32").
  Tested exactly against finite differences of that objective computed by enumerating N-tuples.
  Prompts with all-equal rewards are skipped (every R_g is then the same, so the weights are 0).
  One group per prompt has no sample-independent baseline, hence G >= 2.
  """
  r, s = _rewards(rewards), _rewards(scores, "scores")
  if s.shape != r.shape:
    raise ValueError(f"scores {s.shape} must match rewards {r.shape}")
  r_groups, s_groups = _groups(r, n_bon), _groups(s, n_bon)
  top = s_groups == s_groups.max(axis=-1, keepdims=True)
  outcome = (top * r_groups).sum(axis=-1) / top.sum(axis=-1)
  return _group_outcome_weights(outcome, r, n_bon, clip)


def bon_rl_s(rewards, n_bon: int, *, clip: float | None = None) -> Weights:
  """Exact BoN-RL-S: as `bon_rl_v` with selection by the reward itself, R_g = max reward of group g.

  Oracle selection makes the objective E[max_{i <= N} R(y_i)], which for 0/1 rewards is
  pass@N = 1 - p^N (papers.md §3(b)). Same groups, leave-one-group-out baseline and skipping as
  `bon_rl_v`; tested exactly against finite differences of 1 - p^N. For 0/1 rewards `pkpo` with
  k = N (centre=False) targets the same gradient from every N-subset rather than G disjoint ones.
  """
  r = _rewards(rewards)
  return _group_outcome_weights(_groups(r, n_bon).max(axis=-1), r, n_bon, clip)


def bon_rl_v_selected(rewards, scores, n_bon: int, *, clip: float | None = None) -> Weights:
  """Paper-style BoN-RL-V: REINFORCE on the verifier-selected samples only (papers.md §3(b)).

  grad J ~ E_{y ~ pi_bon}[(R(y) - b) grad log pi(y)]: each group of N contributes its selected
  sample, weighted by its reward minus the prompt's baseline; the other N - 1 samples get 0.
  This treats the BoN tilt pi_bon / pi as constant in theta, so it is an APPROXIMATION. Groups,
  baseline and skipping as in `bon_rl_v`; a tie among the top scores splits the group's weight
  equally among the tied samples (the exact expectation over the uniform tie-break):
  A_i = N (R_i - b_g) / t_g for each of the t_g top-scored samples of group g.

  Its own definition, tested exactly: with b_g independent of group g and E[b_g] = J, the mean
  update is E_{y ~ pi_bon}[(R(y) - J) grad log pi(y)]. Measured on the tests' toy (5 responses,
  the verifier's favourite wrong, a tie across a right and a wrong one) against the exact
  gradient (`bon_rl_v`): cosine 0.985, norm 0.945 times, relative error 18% for N = 2; cosine
  0.963, norm 0.879 times, relative error 28% for N = 3. It does not depend on G.
  """
  r, s = _rewards(rewards), _rewards(scores, "scores")
  if s.shape != r.shape:
    raise ValueError(f"scores {s.shape} must match rewards {r.shape}")
  r_groups, s_groups = _groups(r, n_bon), _groups(s, n_bon)
  top = s_groups == s_groups.max(axis=-1, keepdims=True)
  ties = top.sum(axis=-1, keepdims=True)
  outcome = (top * r_groups).sum(axis=-1) / ties[..., 0]
  advantage = n_bon * top * (r_groups - _leave_one_out_mean(outcome)[..., None]) / ties
  return _finish(advantage.reshape(r.shape), ~_all_equal(r), clip)


def tilt_kl(lam):
  """KL(q_lambda || pi) for the tilt q ~ pi exp(lambda Q), Q ~ Uniform(0, 1) (papers.md §3(b)).

  KL(lambda) = log lambda - log(e^lambda - 1) + lambda e^lambda / (e^lambda - 1) - 1, written with
  expm1 so that large lambda does not overflow (KL(0) = 0).
  """
  lam = np.asarray(lam, dtype=np.float64)
  with np.errstate(divide="ignore", invalid="ignore"):
    d = -np.expm1(-lam)
    kl = np.log(lam) - lam - np.log(d) + lam / d - 1.0
  return np.where(lam > 0, kl, 0.0)


def tilt_lambda(n_bon: int) -> float:
  """lambda_N with KL(lambda_N) = KL(pi_bon || pi) = log N - (N - 1)/N (papers.md §3(b) table).

  KL(lambda) increases from 0, and lambda_N ~ N + 1, so bisection on [0, 2N + 10] (100 halvings,
  far below float precision) finds it: 2.29, 4.92, 9.05, 17.0, 33.0, 65.0 for N = 2 .. 64.
  """
  if n_bon < 1:
    raise ValueError(f"N must be a positive sample count, got {n_bon}")
  target = np.log(n_bon) - (n_bon - 1) / n_bon
  low, high = 0.0, 2.0 * n_bon + 10.0
  for _ in range(100):
    mid = 0.5 * (low + high)
    low, high = (mid, high) if tilt_kl(mid) < target else (low, mid)
  return 0.5 * (low + high)


def bon_sft_exact(expert_scores, sample_scores, n_bon: int, *, quantile=None,
                  clip: float | None = None) -> Weights:
  """BoN-SFT through the exact BoN likelihood of the expert sample (papers.md §3(b) item 5).

  Inputs per prompt x: the verifier score r(x, y) of the expert (or known-correct) sequence y,
  shape [...], and the scores r_1 .. r_M of M >= 2 on-policy samples y_1 .. y_M ~ pi, [..., M].
  Objective: log pi_bon(y|x) = log N + log pi(y|x) + (N - 1) log F(r(x, y)), with
  F(s) = P_{y'~pi}[r(y') <= s], the BoN likelihood when scores have no ties; gradient
  grad log pi(y) + (N - 1) grad F / F with grad F = E_{y''~pi}[1{r(y'') <= r(y)} grad log pi(y'')].

  Estimator: expert weight 1, and on sample m
    w_m = (N - 1) / (M F) * (1{r_m <= r(y)} - b_m),  b_m = mean of 1{r_j <= r(y)} over j != m,
  the leave-one-out baseline keeping (1/M) sum_m (...) grad log pi(y_m) unbiased for grad F.

  quantile: F(r(x, y)) per prompt if known: the estimate is then exactly unbiased for
    grad log pi_bon (tested against finite differences). None (training): F_hat = the samples'
    fraction scored <= r(y), floored at 1/M (an expert that beats every sample would otherwise
    divide by 0; the floor bounds |A_m| = M |w_m| by (N - 1) M). The ratio grad F_hat / F_hat is
    then biased: on the tests' toy (N = 4, F = 0.751) the mean update is off grad log pi_bon by
    30%, 19% and 12% (relative error; cosine >= 0.987) for M = 2, 4 and 6.
  Nothing is skipped: the expert term always carries signal.
  On a policy with atoms (repeated responses, as in the categorical toy) the no-ties formula is
  not the exact law of the selected sample; for sequences scored by a continuous verifier it is.
  """
  expert, scores, below = _expert_inputs(expert_scores, sample_scores)
  m = scores.shape[-1]
  count = below.sum(axis=-1)
  if quantile is None:
    f = np.maximum(count, 1) / m
  else:
    f = np.broadcast_to(np.asarray(quantile, dtype=np.float64), expert.shape)
    if np.any((f <= 0) | (f > 1)):
      raise ValueError(f"quantiles must lie in (0, 1], got {f}")
  baseline = (count[..., None] - below) / (m - 1)
  advantage = (n_bon - 1) / f[..., None] * (below - baseline)
  return _finish(advantage, np.ones(expert.shape, bool), clip, expert=np.ones(expert.shape))


def bon_sft_variational(expert_scores, sample_scores, n_bon: int, *, lam: float | None = None,
                        clip: float | None = None) -> Weights:
  """BoN-SFT through the variational (exponential-tilt) BoN policy (papers.md §3(b)).

  pi_bon ~ pi exp(lambda Q) / Z with Q(y) = F(r(y)) and lambda = lambda_N (`tilt_lambda`, KL
  matching) unless `lam` is given. Objective log pi(y) + lambda Q(y) - log Z for the expert y;
    grad J = [grad log pi(y) + lambda grad Q(y)]
             - E_{y'~pi_bon}[grad log pi(y') + lambda grad Q(y')].
  Estimator, papers.md's steps 1-4 over the M on-policy samples (inputs as `bon_sft_exact`):
    Q_hat(y) = (1/M) sum_m 1{r_m <= r(y)} for the expert, leave-one-out (over j != m) for a sample;
    grad Q_hat(y) = (1/M) sum_m (1{r_m <= r(y)} - Q_hat(y)) grad log pi(y_m);
    E_{pi_bon}[.] ~ sum_j v_j [.](y_j) with v = softmax_j(lambda Q_hat(y_j)) (self-normalised).
  Collecting the coefficient of each grad log pi(y_m): expert weight 1 and
    w_m = (lambda/M) (1{r_m <= r(y)} - Q_hat(y)) - v_m
          - (lambda/M) sum_j v_j (1{r_m <= r_j} - Q_hat(y_j)).

  An APPROXIMATION twice over: the tilt only approximates pi_bon, and the self-normalised weights
  and plug-in quantiles are biased at finite M. Tested against its own definition (the four steps
  computed term by term). Measured on the tests' toy for N = 4: the variational gradient itself
  has cosine 0.984 with grad log pi_bon (relative error 35%; the toy's Q is discrete, not
  Uniform(0, 1), so lambda_N is not KL-matched there), and the estimator's mean is off the
  variational gradient by 22%, 15% and 12% (cosine >= 0.997) for M = 3, 5 and 7.
  """
  expert, scores, below = _expert_inputs(expert_scores, sample_scores)
  m = scores.shape[-1]
  lam = tilt_lambda(n_bon) if lam is None else float(lam)
  q_expert = below.mean(axis=-1)
  # le[..., j, m] = 1{r_m <= r_j}; the diagonal (a sample against itself) is left out of Q_hat_j.
  le = (scores[..., None, :] <= scores[..., :, None]).astype(np.float64)
  q_samples = (le.sum(axis=-1) - 1.0) / (m - 1)
  tilt = lam * q_samples
  v = np.exp(tilt - tilt.max(axis=-1, keepdims=True))
  v /= v.sum(axis=-1, keepdims=True)
  centred = le - q_samples[..., None]
  w = (lam / m * (below - q_expert[..., None]) - v
       - lam / m * np.einsum("...j,...jm->...m", v, centred))
  return _finish(m * w, np.ones(expert.shape, bool), clip, expert=np.ones(expert.shape))


def pkpo(correct, k: int, *, centre: bool = True, clip: float | None = None) -> Weights:
  """PKPO (Walder & Karkhanis), binary case: weights for pass@k (papers.md §3(f)).

  With c correct among n: a correct sample gets k/n, a wrong one (k/n) rho(n-1, c, k-1), where
  rho(n, c, k) = 1 - C(n-c, k)/C(n, k) (so 0 for k = 1). These are the U-statistic, the mean
  over all k-subsets S of the group of max_{i in S} R_i sum_{i in S} grad log pi(y_i), hence
  with centre=False EXACTLY unbiased for grad pass@k (tested). centre=True (papers.md's form;
  n = 4, c = 2, k = 2 gives +-1/12) subtracts the group mean, a baseline that depends on every
  sample: the mean update becomes
  (n - k)/n grad pass@k (derived: the mean weight is k/n times the unbiased pass@k of the group;
  tested exactly), unbiased up to that constant. Rescale by n/(n - k) to remove it.

  Inactive: no correct sample (all weights 0); centred, also every k-subset solved (n - c < k,
  all weights equal, so 0 after centring).
  """
  r = _binary(correct)
  n = r.shape[-1]
  if not 1 <= k <= n:
    raise ValueError(f"k={k} must lie in [1, n={n}]")
  c = r.sum(axis=-1).astype(np.int64)
  wrong_weight = k / n * (1.0 - _all_miss(n - 1, np.minimum(c, n - 1), k - 1))
  w = np.where(r > 0, k / n, wrong_weight[..., None])
  active = c > 0
  if centre:
    w = w - w.mean(axis=-1, keepdims=True)
    active &= n - c >= k
  return _finish(n * w, active, clip)


def pass_at_k_chen(correct, k: int, *, normalise: bool = True,
                   clip: float | None = None) -> Weights:
  """Pass@k advantages of Chen et al. (arXiv 2508.10751), as papers.md §3(f) gives them.

  rho = 1 - C(n-c, k)/C(n, k) (the group's unbiased pass@k), sigma = sqrt(rho (1 - rho));
  A = (1 - rho)/sigma on correct samples, (1 - rho - C(n-c-1, k-1)/C(n-1, k-1))/sigma on wrong
  ones (normalise=False drops the 1/sigma), used GRPO-style: w_i = A_i / n.

  FINDING (derived, and tested exactly by enumeration): without 1/sigma, A is exactly n/k times
  the mean-centred PKPO weights (the A sum to 0 over the group), so E[sum_i w_i grad log pi(y_i)]
  = (n - k)/(n k) grad pass@k: unbiased up to a constant, i.e. the right direction over a batch.
  With 1/sigma, the per-group rescaling depends on the samples, so the mean update is no longer
  a fixed multiple of grad pass@k: on the tests' toy (n = 4, k = 2) it is 0.54 times grad pass@2
  at p = 0.76 and 0.62 times at p = 0.30, against the constant 0.25 without sigma. So it ascends
  a p-dependent reweighting of pass@k across prompts, not pass@k.
  Inactive: rho in {0, 1} (no correct sample, or every k-subset solved), where A = 0 (0/0 with
  sigma).
  """
  r = _binary(correct)
  n = r.shape[-1]
  if not 1 <= k <= n:
    raise ValueError(f"k={k} must lie in [1, n={n}]")
  c = r.sum(axis=-1).astype(np.int64)
  rho = passk.pass_at_k(n, c, k)
  wrong = 1.0 - rho - _all_miss(n - 1, np.minimum(c, n - 1), k - 1)
  advantage = np.where(r > 0, (1.0 - rho)[..., None], wrong[..., None])
  active = (rho > 0) & (rho < 1)
  if normalise:
    sigma = np.sqrt(rho * (1.0 - rho))
    advantage = advantage / np.where(active, sigma, 1.0)[..., None]
  return _finish(advantage, active, clip)


def best_sample_only(rewards, *, eps: float = 1e-6, clip: float | None = None) -> Weights:
  """HEURISTIC best-sample-only pass@k shaping (Tang et al., arXiv 2503.19595; verl GRPO_PASSK).

  Only the group's best sample (the first, if the maximum is shared) gets the advantage
  (r_max - r_second) / (std(r) + eps), std with n - 1 in the denominator as torch.std; every other
  sample gets 0; w_i = A_i / n. papers.md §3(f) claims no objective for it and the tests check
  that it computes this rule. FINDING (derived and tested exactly) for 0/1 rewards: two correct
  samples make the gap 0, so only groups with exactly one correct sample get a weight,
  1 / (n (1/sqrt(n) + eps)); summed, the mean update is grad pass@n / (n (1/sqrt(n) + eps)),
  i.e. grad pass@n / sqrt(n) at eps = 0, a constant multiple of the pass@n gradient (for k = n
  only, and from the c = 1 groups alone, so with high variance). For graded rewards it remains a
  heuristic. Inactive: r_max = r_second (which includes all-equal rewards), where A = 0.
  Needs n >= 2.
  """
  r = _rewards(rewards)
  n = r.shape[-1]
  if n < 2:
    raise ValueError("best-sample-only needs at least 2 samples per prompt")
  top_two = -np.sort(-r, axis=-1)[..., :2]
  gap = top_two[..., 0] - top_two[..., 1]
  best = np.argmax(r, axis=-1)
  # gap > 0 implies a positive spread, so the guarded denominator only hides 0/0 on skipped rows.
  spread = np.where(gap > 0, r.std(axis=-1, ddof=1) + eps, 1.0)
  advantage = np.where(np.arange(n) == best[..., None], (gap / spread)[..., None], 0.0)
  return _finish(advantage, gap > 0, clip)


def _group_outcome_weights(outcome: np.ndarray, rewards: np.ndarray, n_bon: int,
                           clip: float | None) -> Weights:
  """A_i = N (R_g - b_g) on every sample of group g, b_g the other groups' mean outcome."""
  advantage = n_bon * (outcome - _leave_one_out_mean(outcome))
  advantage = np.repeat(advantage, n_bon, axis=-1)
  return _finish(advantage, ~_all_equal(rewards), clip)


def _failure_probability(r: np.ndarray, p_fail) -> tuple[np.ndarray, np.ndarray]:
  """p per prompt and the active mask: given (nothing skipped), or the group's failure fraction."""
  if p_fail is not None:
    return (np.broadcast_to(np.asarray(p_fail, dtype=np.float64), r.shape[:-1]),
            np.ones(r.shape[:-1], bool))
  active = ~_all_equal(r)
  # Skipped groups have p_hat in {0, 1}, where g- is infinite; any p in (0, 1) stands in for it.
  return np.where(active, 1.0 - r.mean(axis=-1), 0.5), active


def _leave_one_out_mean(x: np.ndarray) -> np.ndarray:
  return (x.sum(axis=-1, keepdims=True) - x) / (x.shape[-1] - 1)


def _groups(x: np.ndarray, n_bon: int) -> np.ndarray:
  n = x.shape[-1]
  if n_bon < 1 or n % n_bon or n // n_bon < 2:
    raise ValueError(f"n={n} samples per prompt must split into G >= 2 groups of N={n_bon} "
                     f"(a leave-one-group-out baseline needs another group); draw n = G * N")
  return x.reshape(*x.shape[:-1], n // n_bon, n_bon)


def _all_miss(n: int, c, k: int):
  """C(n - c, k) / C(n, k): the chance that k of n samples with c correct include none of them."""
  c = np.asarray(c)
  if k == 0:
    return np.ones(c.shape)
  return 1.0 - passk.pass_at_k(n, c, k)


def _expert_inputs(expert_scores, sample_scores):
  expert = np.asarray(expert_scores, dtype=np.float64)
  scores = _rewards(sample_scores, "sample_scores")
  if scores.shape[:-1] != expert.shape or scores.shape[-1] < 2:
    raise ValueError(f"sample_scores {scores.shape} must be expert_scores {expert.shape} plus a "
                     f"last axis of M >= 2 on-policy samples")
  if not np.isfinite(expert).all():
    raise ValueError("expert scores must be finite")
  return expert, scores, (scores <= expert[..., None]).astype(np.float64)


def _rewards(x, name: str = "rewards") -> np.ndarray:
  x = np.asarray(x, dtype=np.float64)
  if x.ndim < 1 or x.shape[-1] < 1:
    raise ValueError(f"{name} need a last axis of samples, got shape {x.shape}")
  if not np.isfinite(x).all():
    raise ValueError(f"{name} must be finite")
  return x


def _binary(correct) -> np.ndarray:
  r = _rewards(correct, "correct")
  if not np.isin(r, (0.0, 1.0)).all():
    raise ValueError("correctness must be 0/1 (or bool); use a reward-based estimator otherwise")
  return r


def _all_equal(r: np.ndarray) -> np.ndarray:
  return r.max(axis=-1) == r.min(axis=-1)


def _finish(advantage: np.ndarray, active: np.ndarray, clip: float | None,
            expert: np.ndarray | None = None) -> Weights:
  """Zero the inactive prompts, clip |A| at `clip`, and turn advantages into weights A / n."""
  active = np.asarray(active)
  advantage = np.where(active[..., None], advantage, 0.0)
  fraction = 0.0
  if clip is not None:
    if clip <= 0:
      raise ValueError(f"clip={clip} must be positive (or None for no clipping)")
    changed = np.abs(advantage) > clip
    fraction = float(changed[active].mean()) if active.any() else 0.0
    advantage = np.clip(advantage, -clip, clip)
  return Weights(weights=advantage / advantage.shape[-1], active=active, clip=clip,
                 clipped_fraction=fraction, expert=expert)


__all__ = ["Weights", "g_bar", "g_plus", "g_minus", "sft_on_correct", "reinforce", "bon_rlb_p",
           "bon_rlb_two_sided", "bon_rl_v", "bon_rl_s", "bon_rl_v_selected", "tilt_kl",
           "tilt_lambda", "bon_sft_exact", "bon_sft_variational", "pkpo", "pass_at_k_chen",
           "best_sample_only"]
