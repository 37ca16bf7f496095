"""The SentencePiece wrapper: training, loading, Gemma special ids, decode, check_vocab."""
import pytest
import sentencepiece as spm

from wcse_jax import tokenizer as tk
from wcse_jax.data import pipeline
from wcse_jax.data.tasks import get_task


@pytest.fixture(scope="module")
def corpus():
  task = get_task("arith_chain")
  return [p["inputs"] + p["targets"] for p in pipeline.pairs(task, "train")]


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
  path = tmp_path_factory.mktemp("tok") / "sub" / "tokenizer.model"
  return tk.train_tokenizer(corpus, 512, str(path))


def test_trained_tokenizer_has_gemma_ids_and_round_trips(trained, corpus):
  assert trained.vocab_size == 512
  assert (trained.pad_id, trained.eos_id, trained.bos_id, trained.unk_id) == (0, 1, 2, 3)
  assert [trained.id_to_piece(i) for i in range(4)] == ["<pad>", "<eos>", "<bos>", "<unk>"]
  assert trained.piece_to_id("<start_of_turn>") == 4 and trained.piece_to_id("<end_of_turn>") == 5
  assert trained.encode("<start_of_turn>user\n")[0] == 4
  for text in corpus[:50] + ["héllo wörld ✓ 中文 \t  two  spaces", "Step 1: 12 + 7 = 19"]:
    assert trained.decode(trained.encode(text)) == text
  ids = trained.encode("12 + 7", add_bos=True, add_eos=True)
  assert ids[0] == 2 and ids[-1] == 1
  assert [trained.id_to_piece(i) for i in trained.encode("19")] == ["1", "9"]  # split digits
  with pytest.raises(KeyError, match="not in the vocabulary"):
    trained.piece_to_id("▁Zyzzyva")


def test_decode_stops_at_eos_and_drops_pad_and_bos(trained):
  ids = trained.encode("The answer is 7.")
  assert trained.decode([2] + ids + [1] + trained.encode(" junk") + [0, 0]) == "The answer is 7."
  assert trained.decode([0, 0] + ids) == "The answer is 7."
  import numpy as np
  assert trained.decode(np.array(ids + [1, 0], np.int32)) == "The answer is 7."


def test_synthetic_solutions_are_short(trained):
  task = get_task("arith_chain")
  lengths = [len(trained.encode(" " + e.solution)) for e in task.examples("test")]
  assert max(lengths) < 100


def test_load_written_model_file(trained, tmp_path):
  again = tk.Tokenizer.load(trained.path)
  assert again.vocab_size == trained.vocab_size
  assert again.encode("Ann has 7 pens.") == trained.encode("Ann has 7 pens.")
  with pytest.raises(FileNotFoundError):
    tk.Tokenizer.load(str(tmp_path / "missing.model"))
  junk = tmp_path / "junk.model"
  junk.write_bytes(b"not a model")
  with pytest.raises(ValueError, match="not a SentencePiece model"):
    tk.Tokenizer.load(str(junk))


def test_load_rejects_non_gemma_special_ids(corpus, tmp_path):
  path = tmp_path / "t5style.model"
  spm.SentencePieceTrainer.train(sentence_iterator=iter(corpus), model_prefix=str(path)[:-6],
                                 vocab_size=100, pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
                                 hard_vocab_limit=False,
                                 minloglevel=2)
  with pytest.raises(ValueError, match=r"special ids \(pad, eos, bos, unk\) are \(0, 1, -1, 2\)"):
    tk.Tokenizer.load(str(path))


def test_train_errors(corpus, tmp_path):
  with pytest.raises(ValueError, match="no room"):
    tk.train_tokenizer(corpus, 200, str(tmp_path / "a.model"))
  with pytest.raises(ValueError, match="cannot train a 50000-piece tokenizer"):
    tk.train_tokenizer(corpus[:20], 50000, str(tmp_path / "b.model"))


def test_check_vocab(trained):
  tk.check_vocab(trained, 512)
  with pytest.raises(ValueError, match="model vocab size 640 is larger than .* tokenizer's "
                                       "vocab size 512"):
    tk.check_vocab(trained, 640)
  tk.check_vocab(trained, 640, allow_padding=True)
  with pytest.raises(ValueError, match="model vocab size 500 is smaller than the tokenizer's "
                                       "vocab size 512"):
    tk.check_vocab(trained, 500, allow_padding=True)
  assert tk.GEMMA_EMBED_SIZE - tk.GEMMA_VOCAB_SIZE == 128
