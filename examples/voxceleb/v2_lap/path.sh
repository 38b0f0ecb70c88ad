# shellcheck shell=bash
# Environment of the recipe (sourced from its directory): the repository's virtualenv
# first on PATH; byte-order sorting as in Kaldi data dirs.
root=$(cd -P tools/.. && pwd)
if [ -x "$root/.venv/bin/python" ]; then
  export PATH="$root/.venv/bin:$PATH"
fi
export PYTHONUNBUFFERED=1
export LC_ALL=C
