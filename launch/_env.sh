# Sourced by the launch scripts: creates .venv on first use and installs the pinned set.
# Re-installs only when pyproject.toml changes.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# shellcheck disable=SC1091
source .venv/bin/activate
stamp=".venv/.wcse_jax-$(sha1sum pyproject.toml | cut -c1-12)-${WCSE_EXTRAS:-dev}"
if [ ! -f "$stamp" ]; then
  python -m pip install -q --upgrade pip
  python -m pip install -q -e ".[${WCSE_EXTRAS:-dev}]"
  rm -f .venv/.wcse_jax-*
  touch "$stamp"
fi
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-3}"
# shellcheck disable=SC1091
source "$ROOT/launch/_malloc.sh"
