#!/usr/bin/env bash
# Runs the test suite on 8 simulated CPU devices (tests/conftest.py sets the XLA flag): all of
# tests/ (pyproject's testpaths) unless paths are given, e.g. `bash launch/test.sh tests/models -x`.
source "$(dirname "$0")/_env.sh"
# loadgroup: tests marked with one xdist_group run on one worker (a module whose fixture is a
# whole pipeline); the rest are spread as by default.
python -m pytest -n "${WCSE_TEST_WORKERS:-2}" --dist loadgroup "$@"
