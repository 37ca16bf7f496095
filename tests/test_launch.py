"""launch/_malloc.sh: the launchers run Python with glibc's malloc on transparent huge pages."""
import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Touches a 64 MiB block from libc's malloc (numpy would not do: it asks for huge pages itself)
# and prints how much of the process's anonymous memory sits on huge pages, in kB.
PROBE = """
import ctypes, re
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
size = 64 << 20
ctypes.memset(libc.malloc(size), 1, size)
print(re.search(r"AnonHugePages:\\s+(\\d+) kB", open("/proc/self/smaps_rollup").read()).group(1))
"""


def _thp_mode() -> str | None:
  try:
    text = pathlib.Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
  except OSError:
    return None
  return re.search(r"\[(\w+)\]", text).group(1)


def _glibc_has_hugetlb_tunable() -> bool:
  version = os.confstr("CS_GNU_LIBC_VERSION") if hasattr(os, "confstr") else None
  if not version or not version.startswith("glibc "):
    return False
  return tuple(int(p) for p in version.split()[1].split(".")[:2]) >= (2, 35)


def _launch(tunables: str | None) -> tuple[str, int]:
  """(GLIBC_TUNABLES after sourcing _malloc.sh, huge-page kB of a Python child started there)."""
  env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
  if tunables is not None:
    env["GLIBC_TUNABLES"] = tunables
  script = 'source launch/_malloc.sh; printf "%s\\n" "$GLIBC_TUNABLES"; "$1" -c "$0"'
  run = subprocess.run(["bash", "-c", script, PROBE, sys.executable], cwd=ROOT, env=env,
                       capture_output=True, text=True, check=True)
  value, huge_kb = run.stdout.splitlines()
  return value, int(huge_kb)


def test_sets_hugetlb_and_keeps_other_tunables():
  assert _launch(None)[0] == "glibc.malloc.hugetlb=1"
  assert _launch("glibc.malloc.arena_max=2")[0] == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=1"


def test_keeps_the_users_hugetlb_value():
  assert _launch("glibc.malloc.hugetlb=0")[0] == "glibc.malloc.hugetlb=0"
  assert (_launch("glibc.malloc.arena_max=2:glibc.malloc.hugetlb=0")[0]
          == "glibc.malloc.arena_max=2:glibc.malloc.hugetlb=0")


@pytest.mark.skipif(_thp_mode() != "madvise" or not _glibc_has_hugetlb_tunable(),
                    reason="needs glibc >= 2.35 and transparent huge pages in madvise mode")
def test_large_malloc_blocks_land_on_huge_pages():
  assert _launch(None)[1] >= 32 << 10
  assert _launch("glibc.malloc.hugetlb=0")[1] < 32 << 10
