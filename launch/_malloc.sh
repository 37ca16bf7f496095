# Sourced by _env.sh: glibc's malloc backs its large blocks with transparent huge pages.
#
# XLA:CPU allocates each execution's temporary buffer afresh with malloc; a block that large is
# mmapped and unmapped every time, so with 4 KiB pages the tiny preset's training step took
# ~40,000 page faults (a 157 MB buffer per step), and every large array paid TLB misses. With
# glibc.malloc.hugetlb=1 (glibc >= 2.35; kernels whose THP mode is "madvise" or "always") the
# same step takes ~500 faults and runs ~10% faster on a 2-core CPU, the gemma-package loop and
# a large matmul faster still (benchmarks/RESULTS.md). Older glibc ignores the tunable. A
# glibc.malloc.hugetlb value already in GLIBC_TUNABLES is kept, and so are other tunables there.
case ":${GLIBC_TUNABLES:-}:" in
  *:glibc.malloc.hugetlb=*) ;;
  *) export GLIBC_TUNABLES="${GLIBC_TUNABLES:+$GLIBC_TUNABLES:}glibc.malloc.hugetlb=1" ;;
esac
