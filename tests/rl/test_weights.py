"""Every BoN-aware weight against the exact gradient of its objective on a tiny categorical policy.

The policy is softmax(theta) over K = 5 "responses" with known correctness and verifier scores.
An estimator's mean update E[sum_i w_i grad log pi(y_i)] is computed EXACTLY by enumerating all
K^n tuples of samples (grad log pi(y) = onehot(y) - pi for a softmax), and compared with the
gradient of its objective, itself computed exactly (by enumeration where selection is involved)
and differentiated by central finite differences. Deliberately wrong weights must fail the same
comparison. Approximations are checked against their own definitions, and their distance from
the exact gradient is pinned at the value quoted in their docstrings.
"""
import functools
import itertools
import math

import numpy as np
import pytest

from wcse_jax.rl import weights

K = 5
THETA = np.array([0.3, -0.2, 0.5, -0.7, 0.1])
CORRECT = np.array([0.0, 1.0, 0.0, 1.0, 0.0])
# The verifier's favourite (response 0) is wrong, and it ties a right (1) and a wrong (2) answer.
SCORES = np.array([0.9, 0.6, 0.6, 0.3, 0.1])
# For BoN-SFT's no-ties likelihood: distinct scores, the expert being response 1.
SFT_SCORES = np.array([0.9, 0.6, 0.5, 0.3, 0.1])
EXPERT = 1
GRAD_TOL = 1e-8  # central differences with h = 1e-5: truncation and rounding both ~1e-11.


def softmax(theta):
  e = np.exp(theta - theta.max())
  return e / e.sum()


@functools.lru_cache(maxsize=None)
def tuples(n):
  return np.array(list(itertools.product(range(K), repeat=n)), dtype=np.int64)


def mean_update(out, ys, theta=THETA):
  """Exact E[sum_i w_i grad log pi(y_i) (+ expert weight * grad log pi(expert))] over the tuples."""
  pi = softmax(theta)
  update = np.einsum("tn,tnk->tk", out.weights, np.eye(K)[ys] - pi)
  if out.expert is not None:
    update += out.expert[:, None] * (np.eye(K)[EXPERT] - pi)
  return pi[ys].prod(axis=1) @ update


def fd_grad(f, theta=THETA, h=1e-5):
  return np.array([(f(theta + h * e) - f(theta - h * e)) / (2 * h) for e in np.eye(len(theta))])


def p_fail(theta):
  return softmax(theta) @ (1.0 - CORRECT)


def pass_at(n):
  return lambda theta: 1.0 - p_fail(theta) ** n


def selection_probs(theta, n_bon, scores=SCORES):
  """pi_bon(y): the chance that y is selected from N samples, ties broken uniformly."""
  pi, ys = softmax(theta), tuples(n_bon)
  s = scores[ys]
  top = s == s.max(axis=1, keepdims=True)
  share = top / top.sum(axis=1, keepdims=True)
  probs = np.zeros(K)
  np.add.at(probs, ys, pi[ys].prod(axis=1)[:, None] * share)
  return probs


def bon_reward(n_bon, scores=SCORES):
  return lambda theta: selection_probs(theta, n_bon, scores) @ CORRECT


def quantile(theta):
  return softmax(theta) @ (SFT_SCORES <= SFT_SCORES[EXPERT])


def log_pi_bon(n_bon):
  return lambda theta: (math.log(n_bon) + math.log(softmax(theta)[EXPERT])
                        + (n_bon - 1) * math.log(quantile(theta)))


def variational_objective(lam):
  def objective(theta):
    pi = softmax(theta)
    q = (SFT_SCORES[None, :] <= SFT_SCORES[:, None]).astype(float) @ pi  # Q(y) = F(r(y))
    return math.log(pi[EXPERT]) + lam * q[EXPERT] - math.log(pi @ np.exp(lam * q))
  return objective


def ratio_to(update, target):
  """The scalar c with update = c * target, asserting that update is parallel to target."""
  c = update @ target / (target @ target)
  np.testing.assert_allclose(update, c * target, rtol=0, atol=GRAD_TOL)
  return c


def cosine(a, b):
  return a @ b / np.linalg.norm(a) / np.linalg.norm(b)


def assert_exact(update, target):
  np.testing.assert_allclose(update, target, rtol=0, atol=GRAD_TOL)


def assert_not_exact(update, target):
  # Misses by more than 1% (relative), far above the ~1e-7 relative error allowed when exact.
  assert np.linalg.norm(update - target) > 1e-2 * np.linalg.norm(target), (
      "a wrong weight passed the exactness check")


# ---- baselines --------------------------------------------------------------------------------


def test_sft_on_correct_is_grad_pass_at_1():
  ys = tuples(4)
  assert_exact(mean_update(weights.sft_on_correct(CORRECT[ys]), ys), fd_grad(pass_at(1)))


def test_reinforce_mean_baseline_is_grad_pass_at_1_times_n_minus_1_over_n():
  for n in (2, 4):
    ys = tuples(n)
    update = mean_update(weights.reinforce(CORRECT[ys]), ys)
    assert_exact(update, (n - 1) / n * fd_grad(pass_at(1)))
    assert_not_exact(update, fd_grad(pass_at(1)))


# ---- BoN-RLB ----------------------------------------------------------------------------------


@pytest.mark.parametrize("n_bon", [2, 4])
def test_bon_rlb_p_with_known_p_is_grad_log_pass_at_n(n_bon):
  ys = tuples(4)
  p = np.full(len(ys), p_fail(THETA))
  target = fd_grad(lambda t: math.log(pass_at(n_bon)(t)))
  assert_exact(mean_update(weights.bon_rlb_p(CORRECT[ys], n_bon, p_fail=p), ys), target)
  for wrong_n in (n_bon - 1, n_bon + 1):  # g_N with N off by one
    assert_not_exact(mean_update(weights.bon_rlb_p(CORRECT[ys], wrong_n, p_fail=p), ys), target)


def test_g_bar_on_positive_conditional_is_grad_log_pass_at_n():
  # papers.md's identity: g_N(p) E_{pi(.|R=1)}[grad log pi] = grad log pass@N.
  pi, p = softmax(THETA), p_fail(THETA)
  positive_score = (pi * CORRECT) @ (np.eye(K) - pi) / (1 - p)
  for n_bon in (1, 2, 8):
    np.testing.assert_allclose(weights.g_bar(p, n_bon) * positive_score,
                               fd_grad(lambda t: math.log(pass_at(n_bon)(t))), atol=GRAD_TOL)
  assert weights.g_bar(0.0, 4) == 0.0 and weights.g_plus(0.0, 1) == 1.0


def test_bon_rlb_p_with_the_group_estimate_is_biased_as_documented():
  n_bon, target = 4, fd_grad(lambda t: math.log(pass_at(4)(t)))
  ratios = []
  for n in (4, 6, 8):
    ys = tuples(n)
    out = weights.bon_rlb_p(CORRECT[ys], n_bon)
    assert not out.active[(CORRECT[ys] == CORRECT[ys][:, :1]).all(axis=1)].any()
    ratios.append(ratio_to(mean_update(out, ys), target))
  np.testing.assert_allclose(ratios, [0.5035, 0.7155, 0.8386], atol=1e-4)  # p = 0.757
  # The factor depends on p, so over several prompts the bias reweights them.
  ys, theta = tuples(4), THETA + 2.0 * CORRECT  # p = 0.297
  update = mean_update(weights.bon_rlb_p(CORRECT[ys], n_bon), ys, theta)
  assert ratio_to(update, fd_grad(lambda t: math.log(pass_at(4)(t)), theta)) == pytest.approx(
      1.8142, abs=1e-4)


def test_two_sided_with_known_p_ascends_log_pass_at_n_plus_a_pass_at_1_term():
  n_bon, ys = 4, tuples(4)
  out = weights.bon_rlb_two_sided(CORRECT[ys], n_bon, p_fail=np.full(len(ys), p_fail(THETA)),
                                  clip=None)
  update = mean_update(out, ys)
  derived = fd_grad(lambda t: math.log(pass_at(n_bon)(t))
                    + n_bon * (p_fail(t) + math.log(1 - p_fail(t))))
  assert_exact(update, derived)
  assert_not_exact(update, fd_grad(lambda t: math.log(pass_at(n_bon)(t))))
  assert_not_exact(update, fd_grad(pass_at(n_bon)))


def test_two_sided_weights_and_clip_by_hand():
  out = weights.bon_rlb_two_sided([[1, 0, 0, 0], [1, 1, 1, 1]], 4)
  g_plus, g_minus = 4 * 0.75 ** 3 / (1 - 0.75 ** 4), 4 * 0.75 / 0.25  # 1.71, 12
  np.testing.assert_allclose(out.weights[0], np.array([g_plus, -3, -3, -3]) / 4)
  np.testing.assert_array_equal(out.weights[1], 0.0)
  assert out.active.tolist() == [True, False] and out.clip == 3.0
  assert out.clipped_fraction == 0.75 and g_minus > 3


# ---- exact BoN-RL -----------------------------------------------------------------------------


@pytest.mark.parametrize("n,n_bon", [(4, 2), (6, 3), (6, 2)])
def test_bon_rl_v_is_the_exact_gradient_of_verifier_bon_accuracy(n, n_bon):
  ys = tuples(n)
  update = mean_update(weights.bon_rl_v(CORRECT[ys], SCORES[ys], n_bon), ys)
  target = fd_grad(bon_reward(n_bon))
  assert_exact(update, target)
  # Wrong: a baseline that includes the group's own outcome, the mean of all G outcomes. Then
  # R_g - mean = (G-1)/G (R_g - b_g): the right weights times (G-1)/G.
  groups = n // n_bon
  assert_not_exact(update * (groups - 1) / groups, target)
  # Wrong: the selected reward without the verifier (that is BoN-RL-S's objective).
  assert_not_exact(mean_update(weights.bon_rl_s(CORRECT[ys], n_bon), ys), target)


@pytest.mark.parametrize("n,n_bon", [(4, 2), (6, 3)])
def test_bon_rl_s_is_the_exact_gradient_of_pass_at_n(n, n_bon):
  ys = tuples(n)
  update = mean_update(weights.bon_rl_s(CORRECT[ys], n_bon), ys)
  assert_exact(update, fd_grad(pass_at(n_bon)))
  # Wrong: groups of N - 1 (n splits into them here), i.e. the weights of pass@(N-1).
  assert_not_exact(mean_update(weights.bon_rl_s(CORRECT[ys], n_bon - 1), ys),
                   fd_grad(pass_at(n_bon)))


def test_paper_style_bon_rl_v_matches_its_definition_and_is_measured():
  n, n_bon = 4, 2
  ys = tuples(n)
  update = mean_update(weights.bon_rl_v_selected(CORRECT[ys], SCORES[ys], n_bon), ys)
  pi, pi_bon = softmax(THETA), selection_probs(THETA, n_bon)
  j = pi_bon @ CORRECT
  definition = (pi_bon * (CORRECT - j)) @ (np.eye(K) - pi)  # E_{pi_bon}[(R - J) grad log pi]
  assert_exact(update, definition)
  exact = fd_grad(bon_reward(n_bon))
  assert cosine(update, exact) == pytest.approx(0.9850, abs=1e-4)
  assert np.linalg.norm(update) / np.linalg.norm(exact) == pytest.approx(0.9450, abs=1e-4)
  assert np.linalg.norm(update - exact) / np.linalg.norm(exact) == pytest.approx(0.1772, abs=1e-4)


def test_bon_rl_weights_by_hand():
  rewards = np.array([[1, 0, 0, 0], [1, 1, 1, 1]])
  scores = np.array([[0.2, 0.2, 0.9, 0.1], [0.1, 0.2, 0.3, 0.4]])
  # Groups (0.2, 0.2 | 0.9, 0.1): outcomes 1/2 (tie of a right and a wrong) and 0.
  out = weights.bon_rl_v(rewards, scores, 2)
  np.testing.assert_allclose(out.weights[0], np.array([1, 1, -1, -1]) * 2 * 0.5 / 4)
  assert out.active.tolist() == [True, False] and not out.weights[1].any()
  selected = weights.bon_rl_v_selected(rewards, scores, 2)
  # Selected: sample 0 (R = 1, half of a tie, baseline 0), sample 2 (R = 0, baseline 1/2).
  np.testing.assert_allclose(selected.weights[0], np.array([2 * 1 / 2, 0, 2 * -1 / 2, 0]) / 4)
  np.testing.assert_allclose(weights.bon_rl_s(rewards, 2).weights[0],
                             np.array([1, 1, -1, -1]) * 2 / 4)
  with pytest.raises(ValueError, match="G >= 2 groups"):
    weights.bon_rl_s(rewards, 4)


# ---- BoN-SFT ----------------------------------------------------------------------------------


def test_tilt_lambda_table():
  got = [weights.tilt_lambda(n) for n in (2, 4, 8, 16, 32, 64)]
  assert [float(f"{lam:.3g}") for lam in got] == [2.29, 4.92, 9.05, 17.0, 33.0, 65.0]
  for n, lam in zip((2, 4, 8, 16, 32, 64), got):
    assert weights.tilt_kl(lam) == pytest.approx(math.log(n) - (n - 1) / n, abs=1e-12)
  assert weights.tilt_lambda(1) == pytest.approx(0.0, abs=1e-12)


def _sft_inputs(ys):
  return np.full(len(ys), SFT_SCORES[EXPERT]), SFT_SCORES[ys]


@pytest.mark.parametrize("m,n_bon", [(2, 4), (4, 2), (4, 8)])
def test_bon_sft_exact_with_known_quantile_is_grad_log_pi_bon(m, n_bon):
  ys = tuples(m)
  expert, samples = _sft_inputs(ys)
  f = np.full(len(ys), quantile(THETA))
  update = mean_update(weights.bon_sft_exact(expert, samples, n_bon, quantile=f), ys)
  assert_exact(update, fd_grad(log_pi_bon(n_bon)))
  wrong = weights.bon_sft_exact(expert, samples, n_bon + 1, quantile=f)  # N for N - 1
  assert_not_exact(mean_update(wrong, ys), fd_grad(log_pi_bon(n_bon)))


def test_bon_sft_exact_with_estimated_quantile_is_biased_as_documented():
  target, errors = fd_grad(log_pi_bon(4)), []
  for m in (2, 4, 6):
    ys = tuples(m)
    update = mean_update(weights.bon_sft_exact(*_sft_inputs(ys), 4), ys)
    errors.append(np.linalg.norm(update - target) / np.linalg.norm(target))
  np.testing.assert_allclose(errors, [0.3022, 0.1883, 0.1198], atol=1e-4)


def _variational_by_the_spec(ys_row, lam):
  """papers.md §3(b) steps 1-4 written with explicit gradient vectors, for one draw of samples."""
  pi, m = softmax(THETA), len(ys_row)
  score = np.eye(K) - pi  # grad log pi(y) for each response y, as rows
  r = SFT_SCORES[ys_row]
  def grad_q(r_y, q_y):
    return sum(((r[j] <= r_y) - q_y) * score[ys_row[j]] for j in range(m)) / m
  r_e = SFT_SCORES[EXPERT]
  q_e = np.mean(r <= r_e)
  q = np.array([np.mean([r[j] <= r[i] for j in range(m) if j != i]) for i in range(m)])
  v = np.exp(lam * q) / np.exp(lam * q).sum()
  expert_term = score[EXPERT] + lam * grad_q(r_e, q_e)
  bon_term = sum(v[i] * (score[ys_row[i]] + lam * grad_q(r[i], q[i])) for i in range(m))
  return expert_term - bon_term


def test_bon_sft_variational_matches_its_definition():
  rng = np.random.default_rng(0)
  lam = weights.tilt_lambda(4)
  ys = rng.integers(0, K, (20, 5))
  out = weights.bon_sft_variational(*_sft_inputs(ys), 4)
  assert out.active.all() and (out.expert == 1).all()
  pi = softmax(THETA)
  for row, w in zip(ys, out.weights):
    got = (np.eye(K)[EXPERT] - pi) + w @ (np.eye(K)[row] - pi)
    np.testing.assert_allclose(got, _variational_by_the_spec(row, lam), atol=1e-12)


def test_bon_sft_variational_distance_from_the_gradients_is_as_documented():
  lam = weights.tilt_lambda(4)
  variational, exact = fd_grad(variational_objective(lam)), fd_grad(log_pi_bon(4))
  # The tilt itself (no sampling error) against the no-ties BoN likelihood.
  assert cosine(variational, exact) == pytest.approx(0.9844, abs=1e-4)
  assert np.linalg.norm(variational - exact) / np.linalg.norm(exact) == pytest.approx(0.3463,
                                                                                    abs=1e-4)
  errors = []
  for m in (3, 5, 7):
    ys = tuples(m)
    update = mean_update(weights.bon_sft_variational(*_sft_inputs(ys), 4), ys)
    errors.append(np.linalg.norm(update - variational) / np.linalg.norm(variational))
  np.testing.assert_allclose(errors, [0.2156, 0.1489, 0.1183], atol=1e-4)


# ---- pass@k training --------------------------------------------------------------------------


def test_pkpo_hand_check():
  out = weights.pkpo([1, 1, 0, 0], 2)
  np.testing.assert_allclose(out.weights, [1 / 12, 1 / 12, -1 / 12, -1 / 12], atol=1e-15)
  np.testing.assert_allclose(weights.pkpo([1, 1, 0, 0], 2, centre=False).weights,
                             [1 / 2, 1 / 2, 1 / 3, 1 / 3], atol=1e-15)


@pytest.mark.parametrize("n,k", [(4, 1), (4, 2), (5, 3), (5, 5)])
def test_pkpo_is_the_exact_gradient_of_pass_at_k(n, k):
  ys = tuples(n)
  target = fd_grad(pass_at(k))
  assert_exact(mean_update(weights.pkpo(CORRECT[ys], k, centre=False), ys), target)
  assert_exact(mean_update(weights.pkpo(CORRECT[ys], k), ys), (n - k) / n * target)
  if k > 1:  # the weights for k - 1 are not those for k
    assert_not_exact(mean_update(weights.pkpo(CORRECT[ys], k - 1, centre=False), ys), target)


def test_chen_advantages_by_hand():
  n, c, k = 6, 2, 3
  rho = 1 - math.comb(n - c, k) / math.comb(n, k)
  sigma = math.sqrt(rho * (1 - rho))
  wrong = 1 - rho - math.comb(n - c - 1, k - 1) / math.comb(n - 1, k - 1)
  out = weights.pass_at_k_chen([1, 0, 1, 0, 0, 0], k)
  np.testing.assert_allclose(out.weights * n,
                             np.array([1 - rho, wrong, 1 - rho, wrong, wrong, wrong]) / sigma)
  # rho = 1 (n - c < k) and all-wrong groups carry nothing.
  assert weights.pass_at_k_chen([[1, 1, 1, 1, 0, 0], [0] * 6], 5).active.tolist() == [False] * 2


@pytest.mark.parametrize("n,k", [(4, 2), (5, 3), (5, 1)])
def test_chen_without_sigma_is_a_fixed_multiple_of_grad_pass_at_k(n, k):
  ys = tuples(n)
  out = weights.pass_at_k_chen(CORRECT[ys], k, normalise=False)
  assert_exact(mean_update(out, ys), (n - k) / (n * k) * fd_grad(pass_at(k)))
  np.testing.assert_allclose(out.weights * k, weights.pkpo(CORRECT[ys], k).weights, atol=1e-14)


def test_chen_with_sigma_is_not_a_fixed_multiple_of_grad_pass_at_k():
  n, k, ys = 4, 2, tuples(4)
  ratios = []
  for theta in (THETA, THETA + 2.0 * CORRECT):  # p = 0.757 and p = 0.297
    out = weights.pass_at_k_chen(CORRECT[ys], k)
    ratios.append(ratio_to(mean_update(out, ys, theta), fd_grad(pass_at(k), theta)))
  np.testing.assert_allclose(ratios, [0.5415, 0.6201], atol=1e-4)  # without sigma: 0.25


def test_best_sample_only_computes_what_it_says():
  rewards = np.array([[0.2, 0.9, 0.5, 0.9], [0.1, 0.7, 0.3, 0.2], [1.0, 1.0, 1.0, 1.0]])
  out = weights.best_sample_only(rewards)
  gap = 0.7 - 0.3
  np.testing.assert_allclose(out.weights[1], np.array([0, gap / (np.std(rewards[1], ddof=1)
                                                                 + 1e-6), 0, 0]) / 4)
  assert not out.weights[0].any() and not out.weights[2].any()  # a shared maximum: gap 0
  assert out.active.tolist() == [False, True, False]
  assert not weights.best_sample_only([0, 1, 1]).active  # two correct: the gap is 0


@pytest.mark.parametrize("n", [2, 3, 4, 6])
def test_best_sample_only_on_binary_rewards_is_grad_pass_at_n_over_sqrt_n(n):
  ys = tuples(n)
  update = mean_update(weights.best_sample_only(CORRECT[ys], eps=0.0), ys)
  assert_exact(update, fd_grad(pass_at(n)) / math.sqrt(n))
  assert_not_exact(update, fd_grad(pass_at(n)))


# ---- clipping, skipping, shapes ---------------------------------------------------------------


def test_clipping_reports_the_clip_and_the_fraction_of_active_samples():
  correct = np.array([[1, 0, 0, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0], [1] * 8])
  out = weights.bon_rlb_p(correct, 8, clip=2.0)
  raw = weights.bon_rlb_p(correct, 8)
  assert out.clip == 2.0 and raw.clip is None and raw.clipped_fraction == 0.0
  advantages = raw.weights * 8
  assert advantages[0, 0] > 2.0 > advantages[1, 0] > 0  # g+ at p = 7/8 clipped, at 3/4 not
  assert out.clipped_fraction == pytest.approx(1 / 16)  # 1 of the 16 active samples
  np.testing.assert_allclose(out.weights[0, 0], 2.0 / 8)
  assert out.active.tolist() == [True, True, False]
  with pytest.raises(ValueError, match="clip"):
    weights.reinforce(correct, clip=0.0)


def test_all_equal_prompts_are_skipped_by_every_baselined_estimator():
  rewards = np.array([[1.0] * 4, [0.0] * 4, [0.3] * 4])
  scores = np.array([[0.1, 0.5, 0.5, 0.2]] * 3)
  for out in (weights.reinforce(rewards), weights.bon_rl_v(rewards, scores, 2),
              weights.bon_rl_s(rewards, 2), weights.bon_rl_v_selected(rewards, scores, 2),
              weights.best_sample_only(rewards)):
    assert not out.active.any() and not out.weights.any()
  for fn in (weights.bon_rlb_p, weights.bon_rlb_two_sided):
    out = fn(rewards[:2], 4)
    assert not out.active.any() and not out.weights.any()
  for out in (weights.pkpo(rewards[:2], 2), weights.pass_at_k_chen(rewards[:2], 2)):
    assert not out.active.any() and not out.weights.any()
  # Without a baseline an all-correct group still carries gradient, so it is kept.
  assert weights.sft_on_correct(rewards[:2]).active.tolist() == [True, False]
  assert weights.pkpo(rewards[:2], 2, centre=False).active.tolist() == [True, False]


def test_single_prompt_and_batched_shapes_agree():
  correct = np.array([[1, 0, 0, 1], [0, 1, 0, 0]])
  batched = weights.reinforce(correct)
  for i in range(2):
    single = weights.reinforce(correct[i])
    np.testing.assert_array_equal(single.weights, batched.weights[i])
    assert bool(single.active) == batched.active[i]


@pytest.mark.parametrize("call", [
    lambda: weights.bon_rlb_p([1, 0.5, 0], 2),
    lambda: weights.reinforce([1.0, np.nan]),
    lambda: weights.bon_rl_v([[1, 0, 0, 1]], [[1, 0, 0]], 2),
    lambda: weights.pkpo([1, 0], 3),
    lambda: weights.bon_sft_exact([0.5], [[0.4]], 4),
    lambda: weights.bon_rlb_p([1, 0], 2, p_fail=1.0),
    lambda: weights.tilt_lambda(0),
])
def test_bad_inputs_are_refused(call):
  with pytest.raises(ValueError):
    call()
