"""A character-level tokenizer for the sampler tests, in its own module: `from conftest import`
would pick whichever of the test folders' conftest.py files was imported first."""


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
