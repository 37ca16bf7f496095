"""Compute- and price-matched sampling budgets (papers.md §1(b)1-2)."""
import json

import pytest

from wcse_jax.wcse import plans


def test_default_config_is_the_papers_gemma2_pair():
  plan = plans.plan_from_config(plans.default_config())
  assert plan.ratio == 3.0  # 27e9 / 9e9, exactly
  assert [(b.name, b.se_samples, b.wc_samples) for b in plan.budgets] == [
      ("low", 1, 3), ("high", 10, 30)]
  assert plan.samples("gemma2_9b", "high") == 30
  assert plan.samples("gemma2_27b", "low") == 1
  assert plan.pool_size("gemma2_9b") == 30


def test_price_matched_gemini_is_35_to_1():
  plan = plans.make_plan(plans.ModelCost("gemini-1.5-pro", price_per_token=10.5e-6),
                         plans.ModelCost("gemini-1.5-flash", price_per_token=0.3e-6),
                         se_samples=(1,), budget_names=("price_matched",),
                         mode="price_per_token")
  assert plan.samples("gemini-1.5-flash", "price_matched") == 35


def test_exact_gemma2_counts_give_less_than_three():
  se = plans.ModelCost("gemma2_27b", params=27_227_718_144)
  wc = plans.ModelCost("gemma2_9b", params=9_242_164_736)
  floor = plans.make_plan(se, wc, se_samples=(1, 10))
  assert floor.ratio == pytest.approx(2.94603, abs=1e-5)
  assert [b.wc_samples for b in floor.budgets] == [2, 29]
  nearest = plans.make_plan(se, wc, se_samples=(1, 10), rounding="nearest")
  assert [b.wc_samples for b in nearest.budgets] == [3, 29]


def test_floor_forgives_floating_point_error():
  assert 0.7 / 0.1 < 7
  assert plans.matched_samples(0.7 / 0.1, 1) == 7
  assert plans.matched_samples(2.5, 1, "nearest") == 3
  assert plans.matched_samples(2.49, 1, "nearest") == 2


def test_measured_flops_override_the_config():
  cfg = plans.default_config()
  cfg.mode = "flops_per_token"
  plan = plans.plan_from_config(cfg, {"gemma2_27b": 5.0e10, "gemma2_9b": 1.0e10})
  assert plan.ratio == 5.0
  assert [b.wc_samples for b in plan.budgets] == [5, 50]


def test_missing_cost_names_the_model_and_mode():
  cfg = plans.default_config()
  cfg.mode = "price_per_token"
  with pytest.raises(ValueError, match="'gemma2_27b' has no positive price_per_token"):
    plans.plan_from_config(cfg)


@pytest.mark.parametrize("kwargs,match", [
    (dict(mode="tokens"), "unknown cost mode"),
    (dict(rounding="ceil"), "unknown rounding"),
    (dict(se_samples=(1, 2, 3)), "3 SE budgets"),
    (dict(se_samples=(0, 10)), "positive integers"),
])
def test_bad_arguments_are_clear_errors(kwargs, match):
  args = dict(se=plans.ModelCost("a", params=2.0), wc=plans.ModelCost("b", params=1.0),
              se_samples=(1, 10))
  with pytest.raises(ValueError, match=match):
    plans.make_plan(**{**args, **kwargs})


def test_a_dearer_wc_model_that_buys_nothing_is_an_error():
  with pytest.raises(ValueError, match="buy no WC sample"):
    plans.make_plan(plans.ModelCost("a", params=1.0), plans.ModelCost("b", params=3.0),
                    se_samples=(1,), budget_names=("x",))


def test_unknown_model_or_budget():
  plan = plans.plan_from_config(plans.default_config())
  with pytest.raises(KeyError, match="neither SE"):
    plan.samples("gemma2_2b", "low")
  with pytest.raises(KeyError, match="no budget 'medium'"):
    plan.samples("gemma2_9b", "medium")


def test_to_dict_is_json_and_str_is_readable():
  plan = plans.plan_from_config(plans.default_config())
  as_dict = json.loads(json.dumps(plan.to_dict()))
  assert as_dict["ratio"] == 3.0
  assert as_dict["budgets"][1] == {"name": "high", "se_samples": 10, "wc_samples": 30}
  assert as_dict["se"]["params"] == 27e9
  text = str(plan)
  assert "gemma2_27b" in text and "gemma2_9b" in text
  assert [line.split() for line in text.splitlines()[-2:]] == [["low", "1", "3"],
                                                               ["high", "10", "30"]]
