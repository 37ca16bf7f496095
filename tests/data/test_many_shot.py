"""Many-shot prompt builders (data/many_shot.py): shot counts, the query never among its own
exemplars, the same exemplars for every method at a shot count and seed, nesting, and the k-shot
training rows of the zoo."""
import pytest

from wcse_jax.data import many_shot, prompts
from wcse_jax.data.tasks import get_task
from wcse_jax.tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def task():
  return get_task("arith_chain", num_train=60, num_validation=4, num_test=6, max_operand=9,
                  max_value=40, max_steps=3)


def _all_prompts(task, order, k, query, rationales):
  return {method: many_shot.build(task, method, many_shot.exemplars_for(order, k, query), query,
                                  rationales=rationales)
          for method in many_shot.METHODS}


def _questions_in(text, task, candidates):
  """The candidates' questions in the order they appear in `text`."""
  found = [(text.index(ex.question), ex.id) for ex in candidates if ex.question in text]
  return [i for _, i in sorted(found)]


def test_shot_counts_nesting_and_the_same_exemplars_for_every_method(task):
  pool = task.examples("train")[:40]
  rationales = {ex.id: f"Model wrote this for {ex.id}. The answer is {ex.answer}." for ex in pool}
  query = task.examples("test")[0]
  order = many_shot.exemplar_order(pool, seed=3)
  previous = None
  for k in (0, 1, 4, 16):
    built = _all_prompts(task, order, k, query, rationales)
    shown = many_shot.exemplars_for(order, k, query)
    assert len(shown) == k
    for method, text in built.items():
      assert text.endswith(prompts.query(task, query.question))
      assert text.count("Question:") == k + 1
      # Every method shows the same problems, in the same order.
      assert _questions_in(text, task, pool) == [ex.id for ex in shown], method
    assert all(rationales[ex.id] in built["reinforced"] for ex in shown)
    assert not any(ex.solution in built["unsupervised"] for ex in shown if k)
    if previous is not None:  # nested: the smaller prompt's exemplars come first, in order
      assert [ex.id for ex in shown[:len(previous)]] == [ex.id for ex in previous]
      head = built["human"][:-len(prompts.query(task, query.question))]
      assert head.startswith(many_shot.build(task, "human", previous, query)[
          :-len(prompts.query(task, query.question))])
    previous = shown
  # At 0 shots every method is the plain zero-shot prompt.
  assert set(_all_prompts(task, order, 0, query, rationales).values()) == {
      prompts.build_prompt(task, query, 0)}


def test_the_order_depends_on_the_seed_not_on_how_the_pool_is_listed(task):
  pool = task.examples("train")[:30]
  a = many_shot.exemplar_order(pool, seed=0)
  assert [ex.id for ex in a] == [ex.id for ex in many_shot.exemplar_order(pool[::-1], seed=0)]
  assert [ex.id for ex in a] != [ex.id for ex in many_shot.exemplar_order(pool, seed=1)]
  assert sorted(ex.id for ex in a) == sorted(ex.id for ex in pool)


def test_the_query_is_never_among_its_own_exemplars(task):
  pool = task.examples("train")[:10]
  order = many_shot.exemplar_order(pool, seed=0)
  query = order[2]  # a pool problem asked as the query
  shown = many_shot.exemplars_for(order, 5, query)
  assert len(shown) == 5 and query.id not in [ex.id for ex in shown]
  assert [ex.id for ex in shown] == [ex.id for ex in order if ex.id != query.id][:5]
  twin = type(query)(id="other/id", question=query.question, answer=query.answer,
                     solution=query.solution)  # the same question under another id
  assert query.question not in [ex.question for ex in many_shot.exemplars_for(order, 9, twin)]
  with pytest.raises(ValueError, match="holds only 9 other problems"):
    many_shot.exemplars_for(order, 10, query)


def test_unsupervised_layout_and_format_examples(task):
  pool = task.examples("train")[:8]
  query = task.examples("test")[1]
  fmt = task.examples("train")[8:10]
  text = many_shot.build(task, "unsupervised", pool[:3], query, format_examples=fmt)
  blocks = text.split("\n\n")
  assert blocks[0] == many_shot.PREAMBLE
  assert blocks[1:4] == [f"Question: {ex.question}" for ex in pool[:3]]
  assert blocks[4:6] == [prompts.query(task, ex.question) + prompts.target(task, ex.solution)
                         for ex in fmt]
  assert blocks[6] == prompts.query(task, query.question)
  with pytest.raises(ValueError, match="no correct rationale"):
    many_shot.build(task, "reinforced", pool[:2], query, rationales={pool[0].id: "x"})
  with pytest.raises(ValueError, match="unknown method"):
    many_shot.build(task, "oracle", pool[:2], query)


def test_pick_rationales_takes_the_lowest_index_correct_sample():
  graded = [{"problem_id": "a", "sample_index": 2, "correct": True, "text": " late"},
            {"problem_id": "a", "sample_index": 0, "correct": False, "text": " wrong"},
            {"problem_id": "a", "sample_index": 1, "correct": True, "text": " early "},
            {"problem_id": "b", "sample_index": 0, "correct": False, "text": " no"}]
  assert many_shot.pick_rationales(graded) == {"a": "early"}
  assert many_shot.pick_rationales(graded[::-1]) == {"a": "early"}


def test_k_shot_rows_are_unsegmented_few_shot_prompts(task, tmp_path):
  train = task.examples("train")
  corpus = [prompts.build_prompt(task, ex, 0) + prompts.target(task, ex.solution) for ex in train]
  tokenizer = train_tokenizer(corpus, 320, str(tmp_path / "tok.model"))
  rows = many_shot.k_shot_rows(task, train, tokenizer, length=1024, count=7, seed=0)
  assert len(rows) == 7
  for row in rows:
    tokens, weight = row["tokens"], row["loss_weight"]
    assert len(tokens) <= 1024 and tokens[0] == tokenizer.bos_id
    assert weight[0] == 0 and (weight[1:] == 1).all()
    text = tokenizer.decode(tokens[1:].tolist())
    shots = text.split("\n\n")
    assert len(shots) >= 2  # several examples share the row, one segment
    assert all(s.startswith("Question: ") and "\nAnswer: " in s for s in shots)
    # The ids are those of the whole text encoded at once (what a prompt gets at test time).
    assert tokenizer.encode(text, add_bos=True) == tokens.tolist()
  again = many_shot.k_shot_rows(task, train, tokenizer, length=1024, count=7, seed=0)
  assert all((a["tokens"] == b["tokens"]).all() for a, b in zip(rows, again))
  with pytest.raises(ValueError, match="does not fit"):
    many_shot.k_shot_rows(task, train, tokenizer, length=20, count=1, seed=0)
