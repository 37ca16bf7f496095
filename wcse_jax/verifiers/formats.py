"""GenRM's verification texts and where its verdict is read (papers.md §2(b)).

After the problem and solution segments (base.py), a generative verifier reads
  direct:  [VERIFY] then the verdict " Yes" / " No";
  CoT:     [VERIFY_COT] [rationale] [VERIFY] then the verdict,
with the wording of the paper's appendix prompt ("Verification: Is the answer correct (Yes/No)?",
"Verification: Let's verify step by step."). The score is p(" Yes") at the position where
training put the verdict. `VerdictTokens` finds that position and those tokens for any tokenizer:
" Yes" and " No" are encoded after VERIFY; ids they share (a tokenizer without a "▁Yes" piece
may split off "▁" first) are fed as context, and the first ids where they differ are the two
verdict tokens. With Gemma's tokenizer nothing is shared: the verdict tokens are "▁Yes", "▁No".
"""
from __future__ import annotations

import dataclasses

VERIFY = "\nVerification: Is the answer correct (Yes/No)?"
VERIFY_COT = "\nVerification: Let's verify step by step.\n"
YES, NO = " Yes", " No"
# Where a sampled rationale ends: the CoT verifier writes VERIFY itself when it is done.
RATIONALE_STOP = VERIFY[:VERIFY.index(" (")]


@dataclasses.dataclass(frozen=True)
class VerdictTokens:
  """Feed [VERIFY] + `context`, then read p(yes_id) (and p(no_id))."""
  question: tuple[int, ...]  # the ids of VERIFY
  context: tuple[int, ...]  # ids " Yes" and " No" share after it (usually none)
  yes_id: int
  no_id: int

  @classmethod
  def of(cls, tokenizer) -> "VerdictTokens":
    question = list(tokenizer.encode(VERIFY))
    yes, no = tokenizer.encode(VERIFY + YES), tokenizer.encode(VERIFY + NO)
    n = len(question)
    if list(yes[:n]) != question or list(no[:n]) != question:
      raise ValueError(f"this tokenizer re-tokenises {VERIFY!r} when {YES!r} follows it, so "
                       f"the verdict has no fixed position")
    shared = 0
    while n + shared < min(len(yes), len(no)) and yes[n + shared] == no[n + shared]:
      shared += 1
    if n + shared >= min(len(yes), len(no)):
      raise ValueError(f"{YES!r} and {NO!r} encode to the same tokens after the question")
    return cls(question=tuple(question), context=tuple(int(t) for t in yes[n:n + shared]),
               yes_id=int(yes[n + shared]), no_id=int(no[n + shared]))

  @property
  def suffix(self) -> list[int]:
    """What is fed after a solution (direct) or a rationale (CoT) before the read."""
    return list(self.question) + list(self.context)

  def target(self, label: bool) -> list[int]:
    """The trained verdict: the shared context and the Yes or No token."""
    return list(self.context) + [self.yes_id if label else self.no_id]


def parse_verdict(text: str) -> bool | None:
  """The Yes/No of a text ending in "... (Yes/No)? Yes" or "... (Yes/No)? No"; None otherwise."""
  tail = text.rsplit("(Yes/No)?", 1)
  if len(tail) != 2:
    return None
  word = tail[1].strip().split()[0].strip(".,:;!").lower() if tail[1].strip() else ""
  return {"yes": True, "no": False}.get(word)


__all__ = ["VERIFY", "VERIFY_COT", "YES", "NO", "RATIONALE_STOP", "VerdictTokens",
           "parse_verdict"]
