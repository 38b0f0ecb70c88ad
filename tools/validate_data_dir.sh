#!/usr/bin/env bash
# Kaldi-style wrapper: tools/validate_data_dir.sh [options] <args>; see --help.
set -euo pipefail
root=$(cd -P "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py=${PYTHON:-$root/.venv/bin/python}
[ -x "$py" ] || py=python3
exec "$py" -m wespeaker_lap.bin.validate_data_dir "$@"
