#!/usr/bin/env bash
# The embedded default, end to end on CPU: builds the zoo, runs WC-vs-SE, writes the report.
source "$(dirname "$0")/_env.sh"
# 8 simulated devices; XLA would end the run if a device thread reached a collective 40 s late
# (possible on a busy machine), so that timeout is raised.
export XLA_FLAGS="${XLA_FLAGS:---xla_force_host_platform_device_count=8 --xla_cpu_collective_call_terminate_timeout_seconds=3600}"
python -m wcse_jax.main --config=configs/quickstart.py --workdir="${WORKDIR:-runs/quickstart}" "$@"
