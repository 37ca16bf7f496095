"""Child process of `mathverify.MathVerifyPool`: compares answers with math-verify, one per line.

Run by path (`python -I mathverify_worker.py`), so it imports nothing of wcse_jax. Reads JSON lines
{"gold": ..., "pred": ...} on stdin and writes {"equal": bool, "error": str | null} on stdout.
math-verify's own timeouts are turned off: they use SIGALRM, which does not interrupt long C-level
work (a 10^(10^10) integer) and only works in a main thread. The parent enforces a hard per-item
deadline instead, by killing this process.
"""
import json
import logging
import os
import resource
import sys


def main():
  logging.disable(logging.WARNING)  # math-verify warns about its disabled timeouts per call.
  # A runaway expression should end in MemoryError (-> not equal), not in swapping the host.
  resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
  # The protocol gets its own copy of stdout; anything a library prints goes to stderr.
  out = os.fdopen(os.dup(1), "w")
  sys.stdout = sys.stderr
  from math_verify import parse, verify
  out.write('{"ready": true}\n')
  out.flush()
  for line in sys.stdin:
    try:
      item = json.loads(line)
      # Wrapping in \boxed{} makes math-verify read the whole string as one answer.
      gold = parse("$\\boxed{" + item["gold"] + "}$", parsing_timeout=None)
      pred = parse("$\\boxed{" + item["pred"] + "}$", parsing_timeout=None)
      reply = {"equal": bool(verify(gold, pred, timeout_seconds=None)), "error": None}
    except Exception as e:  # A parse failure means "not equal", never a crash of the pool.
      reply = {"equal": False, "error": f"{type(e).__name__}: {e}"[:300]}
    out.write(json.dumps(reply) + "\n")
    out.flush()


if __name__ == "__main__":
  main()
