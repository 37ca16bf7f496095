#!/usr/bin/env bash
# Runs the whole test suite on 8 simulated CPU devices (tests/conftest.py sets the XLA flag).
source "$(dirname "$0")/_env.sh"
python -m pytest -n "${WCSE_TEST_WORKERS:-2}" tests "$@"
