#!/usr/bin/env bash
# Runs a benchmark in the launchers' environment (the venv; glibc's malloc on huge pages, see
# _malloc.sh): `bash launch/bench.sh training`, `bash launch/bench.sh training --steps 5`, ...
source "$(dirname "$0")/_env.sh"
name="${1:?usage: bash launch/bench.sh training|sampling [benchmark arguments]}"
shift
python "benchmarks/$name.py" "$@"
