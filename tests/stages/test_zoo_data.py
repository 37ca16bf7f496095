"""What the zoo trains on: the task's train split less the held-out problems, plus the problems
of `zoo.extra_knobs` less anything the experiment evaluates on or holds out."""
import pytest

from configs import verifiers
from wcse_jax import experiment
from wcse_jax.data import tasks
from wcse_jax.stages import common, zoo

WORDS = ("apple", "bread", "cider", "dates", "eggs", "figs", "grape", "honey")


def _words(examples):
  return {tuple(ex.meta["words"]) for ex in examples}


def test_the_verifiers_policy_sees_longer_lists_but_no_test_problem():
  cfg = verifiers.get_config("last_letter_concat")
  task = common.make_task(cfg)
  train, held_out = zoo.training_problems(cfg)
  lengths = sorted({ex.meta["length"] for ex in train})
  assert lengths == [2, 3, 4, 5, 6, 7]
  assert sum(ex.meta["length"] >= 5 for ex in train) == 900
  assert not _words(train) & _words(task.examples("test"))
  assert len(held_out) == cfg.sampling.num_problems
  assert {ex.meta["length"] for ex in held_out} <= {2, 3, 4}


def test_extra_problems_that_match_evaluated_or_held_out_ones_are_dropped():
  cfg = verifiers.get_config("micro")
  cfg.task.knobs = dict(vocabulary=WORDS, train_lengths=(2,), test_lengths=(3,),
                        num_train_per_length=30, num_validation_per_length=10,
                        num_test_per_length=40)
  cfg.sampling.num_problems = 10  # held out
  # Its own test split differs (one problem), so its train split can draw the task's test lists:
  # 8 * 7 * 6 = 336 lists of three, 40 of them in the task's test split.
  cfg.zoo.extra_knobs = dict(train_lengths=(3,), num_train_per_length=150,
                             num_test_per_length=1)
  task = common.make_task(cfg)
  extra = tasks.get_task(cfg.task.name, **{**cfg.task.knobs, **cfg.zoo.extra_knobs})
  train, held_out = zoo.training_problems(cfg)
  reserved = _words(task.examples("test")) | _words(task.examples("validation")) | _words(held_out)
  overlap = _words(extra.examples("train")) & reserved
  assert overlap  # the case this test is about happens
  assert not _words(train) & reserved
  assert len(train) == 20 + 150 - len(overlap)


def test_extra_knobs_must_be_knobs_of_a_generated_task():
  from configs import wcse_gsm8k
  cfg = wcse_gsm8k.get_config("low")
  cfg.zoo.held_out_problems = 0
  cfg.zoo.extra_knobs = dict(num_train=10)
  with pytest.raises(experiment.StageError, match="config.zoo.extra_knobs"):
    zoo.validate(cfg)
  cfg = verifiers.get_config("micro")
  cfg.zoo.extra_knobs = dict(lengths=(5,))
  with pytest.raises(experiment.StageError, match=r"must be knobs of last_letter_concat"):
    zoo.validate(cfg)
