"""The text API: strings in and out, end tokens and stop strings cut from the text, results in
input order and independent of chunking, FLOPs summed, a progress bar."""
import numpy as np
import pytest
from char_tokenizer import CharTokenizer

from wcse_jax.sampling import FinishReason, Temperature
from wcse_jax.sampling.text import TextSampler

PROMPTS = ["Q: ab?", "the x", "Qu", "12. "]  # with BOS at most 8 tokens: one length bucket
NEW = 16


@pytest.fixture(scope="module")
def tok(config):
  return CharTokenizer(size=config.vocab_size)  # every id the model can emit has a text


# Sampled rather than greedy: this random model's greedy texts repeat one character. With the same
# seed a row's tokens are the same up to where a stop or end token ends it.
SAMPLING = dict(max_new_tokens=NEW, chooser=Temperature(1.0), seed=1)


@pytest.fixture(scope="module")
def free(model, params, tok):
  """Texts without stops (the end token, 1, may still occur)."""
  return TextSampler(model, tok, cache_length=64)(params, PROMPTS, **SAMPLING)


def test_texts_are_the_decoded_tokens(free, tok):
  assert free.generated_tokens == sum(len(c.tokens) for row in free.completions for c in row)
  for row in free.completions:
    (c,) = row
    body = c.tokens[:-1] if c.finish_reason == FinishReason.EOS else c.tokens
    assert c.text == tok.decode(body.tolist())
    assert len(c.logprobs) == len(c.tokens) and (c.logprobs < 0).all()
  assert free.flops > 0 and len({t for (t,) in free.texts}) == len(PROMPTS)


def test_end_token_is_not_in_the_text(model, params, tok, free):
  text = free.texts[0][0]
  end = next(ch for ch in text[2:] if tok.encode(ch) == [tok.CHARS.index(ch) + 3])
  out = TextSampler(model, tok, cache_length=64, extra_eos_ids=tok.encode(end))(
      params, PROMPTS, **SAMPLING)
  for (before,), (after,) in zip(free.completions, out.completions):
    if end in before.text and before.finish_reason != FinishReason.EOS:
      assert after.text == before.text[:before.text.index(end)]
      assert after.finish_reason == FinishReason.EOS and after.tokens[-1] == tok.encode(end)[0]
  assert out.completions[0][0].finish_reason == FinishReason.EOS


def test_stop_strings_cut_the_text_and_end_the_row(model, params, tok, free):
  text = free.texts[1][0]
  stop = text[3:5]
  out = TextSampler(model, tok, cache_length=64)(params, PROMPTS, stop=[stop, "never!"],
                                                 **SAMPLING)
  for (before,), (after,) in zip(free.completions, out.completions):
    if stop in before.text:
      assert after.text == before.text[:before.text.index(stop)]
      assert after.finish_reason == FinishReason.STOP
      assert len(after.tokens) < len(before.tokens) or len(before.tokens) == NEW
      # The row ended on the token that completed the stop string.
      assert stop in tok.decode(after.tokens.tolist())
      assert stop not in tok.decode(after.tokens[:-1].tolist())
    else:
      assert after.text == before.text and after.finish_reason == before.finish_reason
  assert out.completions[1][0].finish_reason == FinishReason.STOP


def test_order_and_results_do_not_depend_on_chunking(model, params, tok):
  kwargs = dict(num_samples=2, max_new_tokens=NEW, chooser=Temperature(1.0), seed=4)
  whole = TextSampler(model, tok, cache_length=64, batch_size=8)(params, PROMPTS, **kwargs)
  chunked = TextSampler(model, tok, cache_length=64, batch_size=2)(params, PROMPTS, **kwargs)
  assert whole.texts == chunked.texts
  assert whole.flops == pytest.approx(chunked.flops)
  assert len(whole.texts) == len(PROMPTS) and all(len(row) == 2 for row in whole.texts)


def test_progress_bar_reports_tokens_per_second(model, params, tok, capsys):
  TextSampler(model, tok, cache_length=64)(params, PROMPTS, progress=True, **SAMPLING)
  assert "tokens_per_s" in capsys.readouterr().err


def test_bad_arguments(model, params, tok):
  sampler = TextSampler(model, tok, cache_length=64)
  with pytest.raises(ValueError, match="not a single string"):
    sampler(params, "one prompt")
  with pytest.raises(ValueError, match="batch_size must be >= 1, got 0"):
    TextSampler(model, tok, batch_size=0)
  with pytest.raises(ValueError, match="num_samples must be an integer >= 1, got 0"):
    sampler(params, PROMPTS, num_samples=0)


def test_fewer_decode_rows_than_samples_give_the_same_texts(model, params, tok):
  """With 2 rows for 4 prompts x 3 samples each row refills (sampling/refill.py); sample j of a
  prompt draws the same tokens whichever row runs it."""
  kwargs = dict(num_samples=3, **SAMPLING)
  wide = TextSampler(model, tok, cache_length=64)(params, PROMPTS, **kwargs)
  narrow = TextSampler(model, tok, cache_length=64, rows=2)(params, PROMPTS, **kwargs)
  assert narrow.texts == wide.texts
  assert narrow.generated_tokens == wide.generated_tokens
