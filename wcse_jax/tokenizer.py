"""SentencePiece tokenizer: Gemma's `tokenizer.model`, or a small one trained on the embedded tasks.

Both keep Gemma's special-token ids: pad=0, eos=1, bos=2, unk=3. A trained model also has
`<start_of_turn>` and `<end_of_turn>` as user-defined symbols (ids 4 and 5; in Gemma they are
106 and 107), "\\n" as a piece of its own (id 6), and Gemma's other choices: BPE, byte fallback (any
text encodes), digits split one per token, no dummy-prefix space, no normalisation.

Vocabulary vs embedding size: `check_vocab(tok, n)` requires n == tok.vocab_size unless
`allow_padding=True`, which accepts an embedding table larger than the vocabulary (the extra rows
are never produced by the tokenizer). Gemma needs it: its tokenizer has 256,000 pieces and its
checkpoints 256,128 embedding rows. Our own presets should use the exact size. An embedding
smaller than the vocabulary is always an error.
"""
from __future__ import annotations

import io
import os
from typing import Iterable, Sequence

import sentencepiece as spm

PAD_ID, EOS_ID, BOS_ID, UNK_ID = 0, 1, 2, 3
TURN_SYMBOLS = ("<start_of_turn>", "<end_of_turn>")
GEMMA_VOCAB_SIZE, GEMMA_EMBED_SIZE = 256_000, 256_128


class Tokenizer:
  """A thin wrapper of `sentencepiece.SentencePieceProcessor` with Gemma's conventions."""

  def __init__(self, model_proto: bytes, path: str | None = None):
    self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
    self.path = path
    got = (self._sp.pad_id(), self._sp.eos_id(), self._sp.bos_id(), self._sp.unk_id())
    if got != (PAD_ID, EOS_ID, BOS_ID, UNK_ID):
      raise ValueError(f"{path or 'tokenizer'}: special ids (pad, eos, bos, unk) are {got}, "
                       f"expected Gemma's {(PAD_ID, EOS_ID, BOS_ID, UNK_ID)}")

  @classmethod
  def load(cls, path: str) -> "Tokenizer":
    """Loads a SentencePiece model file (e.g. Gemma's tokenizer.model)."""
    if not os.path.exists(path):
      raise FileNotFoundError(f"{path}: no tokenizer model file")
    with open(path, "rb") as f:
      proto = f.read()
    try:
      return cls(proto, path)
    except RuntimeError as e:  # sentencepiece's message for a file that is not a model.
      raise ValueError(f"{path}: not a SentencePiece model ({e})") from None

  @property
  def vocab_size(self) -> int:
    return self._sp.vocab_size()

  pad_id, eos_id, bos_id, unk_id = PAD_ID, EOS_ID, BOS_ID, UNK_ID

  def encode(self, text: str, add_bos: bool = False, add_eos: bool = False) -> list[int]:
    ids = self._sp.encode(text)
    return ([BOS_ID] if add_bos else []) + ids + ([EOS_ID] if add_eos else [])

  def decode(self, ids: Iterable[int]) -> str:
    """Text of `ids` up to the first eos; pad and bos are dropped."""
    out = []
    for i in ids:
      i = int(i)
      if i == EOS_ID:
        break
      if i not in (PAD_ID, BOS_ID):
        out.append(i)
    return self._sp.decode(out)

  def piece_to_id(self, piece: str) -> int:
    """Id of an exact piece (e.g. "▁Yes"); KeyError when the vocabulary lacks it."""
    i = self._sp.piece_to_id(piece)
    if i == UNK_ID and piece != self._sp.id_to_piece(UNK_ID):
      raise KeyError(f"piece {piece!r} is not in the vocabulary of {self.path or 'tokenizer'}")
    return i

  def id_to_piece(self, i: int) -> str:
    return self._sp.id_to_piece(int(i))

  def serialized_model_proto(self) -> bytes:
    return self._sp.serialized_model_proto()


def train_tokenizer(texts: Iterable[str], vocab_size: int, path: str, *,
                    user_defined_symbols: Sequence[str] = ()) -> Tokenizer:
  """Trains a BPE SentencePiece model on `texts`, writes it to `path` and returns it.

  `vocab_size` counts everything: the 4 special ids, the user-defined symbols (turn markers, "\\n"
  and `user_defined_symbols`) and the 256 byte-fallback pieces; so it must be > 263, and the
  corpus must have enough distinct material to fill it (else sentencepiece refuses, and so do we).
  """
  symbols = list(TURN_SYMBOLS) + ["\n"] + [s for s in user_defined_symbols
                                           if s not in TURN_SYMBOLS and s != "\n"]
  minimum = 4 + len(symbols) + 256
  if vocab_size <= minimum:
    raise ValueError(f"vocab_size={vocab_size} leaves no room for learned pieces: 4 special ids "
                     f"+ {len(symbols)} symbols + 256 byte pieces = {minimum}")
  model = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(texts), model_writer=model, vocab_size=vocab_size,
        model_type="bpe", pad_id=PAD_ID, eos_id=EOS_ID, bos_id=BOS_ID, unk_id=UNK_ID,
        pad_piece="<pad>", eos_piece="<eos>", bos_piece="<bos>", unk_piece="<unk>",
        user_defined_symbols=symbols, byte_fallback=True, split_digits=True,
        add_dummy_prefix=False, normalization_rule_name="identity",
        remove_extra_whitespaces=False, allow_whitespace_only_pieces=True,
        character_coverage=1.0, max_sentence_length=1 << 16, num_threads=os.cpu_count() or 1,
        minloglevel=2)
  except RuntimeError as e:
    raise ValueError(f"cannot train a {vocab_size}-piece tokenizer on this corpus: {e}") from None
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  tmp = path + ".tmp"
  with open(tmp, "wb") as f:
    f.write(model.getvalue())
  os.replace(tmp, path)
  return Tokenizer(model.getvalue(), path)


def check_vocab(tokenizer: Tokenizer, model_vocab_size: int, *, allow_padding: bool = False
                ) -> None:
  """Raises ValueError naming both sizes unless the model's embedding fits the tokenizer."""
  n = tokenizer.vocab_size
  if model_vocab_size == n or (allow_padding and model_vocab_size > n):
    return
  why = ("smaller than" if model_vocab_size < n else
         "larger than (pass allow_padding=True if the extra rows are padding, as in Gemma)")
  raise ValueError(f"model vocab size {model_vocab_size} is {why} the tokenizer's vocab size {n}"
                   f" ({tokenizer.path or 'tokenizer'})")
