"""The XLA flags of every test process: simulated CPU devices, XLA's collective timeouts, and
XLA's older CPU loop emitters.

XLA's CPU collectives end the whole process when a device thread reaches a rendezvous 40 s after
the others (xla_cpu_collective_call_terminate_timeout_seconds). On a 2-core machine running two
test workers, one device thread can wait that long behind the other worker's compilation; a CI
run lost a worker that way in the middle of an every-config run.

The suite's time is mostly XLA compiling test-sized programs, and most of a compilation is LLVM
code generation for each fusion: the older loop emitters generate code faster than the fusion
emitters (measured: tests/training/test_training_step.py and tests/sampling/test_refill.py
120 s -> 94 s, a third less CPU time), and run it about a quarter slower, which these programs
barely notice. The semantics are XLA's either way; users' runs keep XLA's defaults.
"""
TIMEOUTS = "--xla_cpu_collective_call_terminate_timeout_seconds=3600"
FAST_CODEGEN = "--xla_cpu_use_fusion_emitters=false"


def xla_flags(devices: int) -> str:
  """XLA_FLAGS for a process with `devices` simulated CPU devices."""
  return f"--xla_force_host_platform_device_count={devices} {TIMEOUTS} {FAST_CODEGEN}"

# For each process of a multi-process run: no persistent compilation cache (tests/conftest.py).
# A two-process quickstart hung in its first collective with the cache that single-process
# tests had filled, and ran through without it: the cache's key seems not to tell an executable
# of one 8-device process from one of two 4-device processes (the same program, the same 8
# global devices).
NO_COMPILATION_CACHE = {"JAX_ENABLE_COMPILATION_CACHE": "false"}
