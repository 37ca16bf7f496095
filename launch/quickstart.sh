#!/usr/bin/env bash
# The embedded default, end to end on CPU: builds the zoo, runs WC-vs-SE, writes the report.
source "$(dirname "$0")/_env.sh"
export XLA_FLAGS="${XLA_FLAGS:---xla_force_host_platform_device_count=8}"
python -m wcse_jax.main --config=configs/quickstart.py --workdir="${WORKDIR:-runs/quickstart}" "$@"
