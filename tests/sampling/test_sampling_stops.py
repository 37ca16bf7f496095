"""The stop matcher: text-level matching however tokens split the stop string, and token-id
sequences; checked against a plain `in` on the concatenated text."""
import numpy as np
import pytest

from wcse_jax.sampling.stops import StopMatcher, first_stop, token_texts


def _first_hit(matcher, tokens):
  """Index of the token at which the matcher reports a stop (as the decode loop does), or None."""
  state = 0
  for i, t in enumerate(tokens):
    state = matcher.table[state, t]
    if state < 0:
      return i
  return None


def _first_hit_by_text(texts, tokens, stops):
  text = ""
  for i, t in enumerate(tokens):
    text += "\0" if texts[t] is None else texts[t]  # Unknown text breaks any match.
    if any(s in text for s in stops):
      return i
  return None


@pytest.mark.parametrize("stops", [("\n\n",), ("\nQu", "x\n\n"), ("Qu:",), ("aa", "a"),
                                   ("abab", "bab")])
def test_text_stops_match_however_the_tokens_split_them(tokenizer, stops):
  vocab = 64  # larger than the tokenizer's 52: ids past it have no text
  texts = token_texts(tokenizer, vocab)
  matcher = StopMatcher.from_strings(stops, tokenizer, vocab)
  # Random sequences over the tokens made of the stops' characters (plus a few others), so
  # stops occur often and are spelled by many different splits.
  alphabet = {c for s in stops for c in s}
  useful = [t for t, x in enumerate(texts) if x and set(x) <= alphabet | {"z"}]
  rng = np.random.default_rng(0)
  hits = 0
  for _ in range(400):
    tokens = rng.choice(useful + [5, 60], size=12).tolist()
    expected = _first_hit_by_text(texts, tokens, stops)
    assert _first_hit(matcher, tokens) == expected, (tokens, [texts[t] for t in tokens])
    hits += expected is not None
  assert hits > 20  # the property was exercised on real matches


def test_stop_split_across_tokens_three_ways(tokenizer):
  matcher = StopMatcher.from_strings(["\n\n"], tokenizer, tokenizer.vocab_size)
  nl, nlnl, x_nl, nl_q, a = (tokenizer.encode(s)[0] for s in ["\n", "\n\n", "x\n", "\nQ", "a"])
  assert tokenizer.decode([x_nl]) == "x\n" and tokenizer.decode([nl_q]) == "\nQ"
  assert _first_hit(matcher, [a, nlnl, a]) == 1
  assert _first_hit(matcher, [a, nl, nl]) == 2
  assert _first_hit(matcher, [x_nl, nl_q]) == 1
  assert _first_hit(matcher, [x_nl, a, nl_q]) is None


def test_tokens_without_known_text_never_match(tokenizer):
  """Ids past the tokenizer's vocabulary reset the automaton: no invented match."""
  matcher = StopMatcher.from_strings(["a"], tokenizer, 64)
  assert (matcher.table[:, 60] == 0).all()
  assert token_texts(tokenizer, 64)[60] is None


def test_text_in_context_keeps_a_leading_space():
  class SpaceStripping:
    """Like SentencePiece: a piece "▁x" decodes to " x", except at the start of the text."""
    pieces = ["", "", "", "a", "▁the", ":"]
    eos_id, pad_id = 1, 0

    def encode(self, text, add_bos=False):
      return [3]

    def decode(self, ids):
      return "".join(self.pieces[i] for i in ids).replace("▁", " ").lstrip(" ")

  tok = SpaceStripping()
  assert token_texts(tok, 6)[4] == " the"
  matcher = StopMatcher.from_strings([": the"], tok, 6)
  assert _first_hit(matcher, [3, 5, 4]) == 2
  assert _first_hit(matcher, [5, 3, 4]) is None


def test_token_sequences():
  matcher = StopMatcher.from_token_sequences([[5, 6, 5], [7]], vocab_size=10)
  assert _first_hit(matcher, [5, 6, 6, 5, 6, 5]) == 5
  assert _first_hit(matcher, [5, 5, 6, 5]) == 3
  assert _first_hit(matcher, [1, 2, 7]) == 2
  assert _first_hit(matcher, [5, 6, 1, 5]) is None
  # The state count is padded to a power of two, so similar stop sets share a compilation.
  assert matcher.table.shape == (8, 10)


def test_bad_stops_are_named(tokenizer):
  with pytest.raises(ValueError, match="outside the vocabulary"):
    StopMatcher.from_token_sequences([[3, 12]], vocab_size=10)
  with pytest.raises(ValueError, match="must not be empty"):
    StopMatcher.from_token_sequences([[]], vocab_size=10)
  with pytest.raises(ValueError, match="non-empty strings"):
    StopMatcher.from_strings(["ok", ""], tokenizer, 64)


def test_first_stop():
  assert first_stop("ab\n\ncd Q:", ["Q:", "\n\n"]) == 2
  assert first_stop("abc", ["x"]) is None
