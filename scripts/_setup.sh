# Shared set-up for scripts/test and scripts/demo: a virtual environment in .venv with dualact installed
# (editable) and the extras the caller names. Idempotent; safe to source repeatedly.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
python -m pip install --quiet --upgrade pip >/dev/null
python -m pip install --quiet -e ".[${DUALACT_EXTRAS:-test}]"
