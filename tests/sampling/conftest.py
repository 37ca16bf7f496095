"""Shared fixtures: the "test" preset with weights rescaled so next-token distributions are
varied but not flat (the training init, std 0.02, gives near-uniform logits on a random model, where
float rounding could flip greedy choices), and a character-level tokenizer with a few
multi-character tokens."""
import jax
import pytest

from wcse_jax.models import gemma2, presets


@pytest.fixture(scope="session")
def config():
  return presets.get_preset("test")


@pytest.fixture(scope="session")
def model(config):
  return gemma2.make_model(config)


@pytest.fixture(scope="session")
def params(model):
  def rescale(path, x):  # to a fixed std whatever the init: embeddings 0.3, weights 0.1
    name = jax.tree_util.keystr(path)
    if "scale" in name:
      return x
    return x * ((0.3 if "input_embedding" in name else 0.1) / x.std())
  return jax.tree_util.tree_map_with_path(rescale, gemma2.init_params(model, jax.random.key(0)))


class CharTokenizer:
  """ids 0 pad, 1 eos, 2 bos; then one token per character of CHARS; then multi-character tokens
  (so a stop string can be spelled by different token splits). Encoding is greedy longest match.
  Ids past the vocabulary raise IndexError, as SentencePiece does."""
  CHARS = "abcdefghijklmnopqrstuvwxyz :?\nQA0123456789."
  MULTI = ("\n\n", "x\n", "\nQ", "ab", "Qu", " the")
  pad_id, eos_id, bos_id = 0, 1, 2

  def __init__(self, size=None):
    self.pieces = ["", "", ""] + list(self.CHARS) + list(self.MULTI)
    self.pieces += ["#"] * ((size or 0) - len(self.pieces))  # filler up to a model's vocabulary

  @property
  def vocab_size(self):
    return len(self.pieces)

  def encode(self, text, add_bos=False):
    ids, i = [], 0
    while i < len(text):
      best = max((t for t in range(3, len(self.pieces)) if text.startswith(self.pieces[t], i)),
                 key=lambda t: len(self.pieces[t]))
      ids.append(best)
      i += len(self.pieces[best])
    return ([self.bos_id] if add_bos else []) + ids

  def decode(self, ids):
    out = []
    for i in ids:
      if int(i) == self.eos_id:
        break
      out.append(self.pieces[int(i)])
    return "".join(out)


@pytest.fixture(scope="session")
def tokenizer():
  return CharTokenizer()
