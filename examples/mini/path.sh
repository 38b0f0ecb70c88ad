# shellcheck shell=bash
# Environment of the recipe: the repository's virtualenv first on PATH.
root=$(cd ../.. && pwd)
if [ -x "$root/.venv/bin/python" ]; then
  export PATH="$root/.venv/bin:$PATH"
fi
export PYTHONUNBUFFERED=1
export LC_ALL=C
