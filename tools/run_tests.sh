#!/usr/bin/env bash
# Lint and test: ruff (no blanket ignores), shellcheck on the shell scripts, then pytest.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
py=${PYTHON:-$root/.venv/bin/python}
"$py" -m ruff check .
if command -v shellcheck >/dev/null 2>&1; then
  git ls-files '*.sh' .ci/run | xargs -r shellcheck -x
else
  echo "run_tests.sh: shellcheck not installed; shell scripts not linted" >&2
fi
"$py" -m pytest -q "$@"
