"""Power-of-two bucketing of lengths and row counts, so shapes (and compilations) repeat."""
from __future__ import annotations


def pow2(n: int) -> int:
  """The smallest power of two >= n (1 for n <= 1)."""
  return 1 << max(int(n) - 1, 0).bit_length()


__all__ = ["pow2"]
