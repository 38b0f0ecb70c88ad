#!/usr/bin/env bash
# Kaldi-style wrapper: tools/make_raw_list.sh [options] <args>; see --help.
set -euo pipefail
root=$(cd -P "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
py=${PYTHON:-$root/.venv/bin/python}
[ -x "$py" ] || py=python3
exec "$py" -m wespeaker_lap.bin.make_raw_list "$@"
