#!/usr/bin/env bash
# Lint and test: ruff (no blanket ignores), shellcheck on the shell scripts, then pytest
# (the tests and the package's doctests).
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
# the test suite and every docstring example of the package, in one run (one summary line);
# arguments replace both paths, e.g. `bash tools/run_tests.sh tests/test_train.py`
if [ $# -eq 0 ]; then
  set -- tests wespeaker_lap
fi
"$py" -m pytest -q --doctest-modules "$@"
