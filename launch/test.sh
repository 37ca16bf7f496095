#!/usr/bin/env bash
# Runs the test suite on 8 simulated CPU devices (tests/conftest.py sets the XLA flag): all of
# tests/ (pyproject's testpaths) unless paths are given, e.g. `bash launch/test.sh tests/models -x`.
source "$(dirname "$0")/_env.sh"
# loadfile: each test file runs on one worker, in one go, so a module-scoped fixture (a whole
# micro pipeline, a trained tokenizer, the every-config assets) is built once; spreading a
# file's tests over both workers, or interleaving files on one, built the quickstart fixture
# twice (measured: 196 s and 176 s in one run).
python -m pytest -n "${WCSE_TEST_WORKERS:-2}" --dist loadfile "$@"
