#!/usr/bin/env bash
# Synthesize the mini recipe's corpus (speech, trials, noise, RIRs) with Debian TTS engines.
#
# Usage: local/make_corpus.sh <out_dir> [synth_corpus.py options]
#   e.g. local/make_corpus.sh data/corpus --seed 7 --nj 2 --quick
# Writes <out_dir>/data/{train,test,noise,rirs}, <out_dir>/data/test/trials.{kaldi,txt},
# <out_dir>/speakers.tsv (see tools/synth/synth_corpus.py --help).
# Python: $PYTHON, else the repository's .venv, else python3.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)

if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
  echo "usage: $0 <out_dir> [synth_corpus.py options]" >&2
  exit 1
fi
out=$1
shift

py=${PYTHON:-}
if [ -z "$py" ]; then
  if [ -x "$root/.venv/bin/python" ]; then py=$root/.venv/bin/python; else py=python3; fi
fi
if ! command -v espeak-ng >/dev/null 2>&1; then
  echo "$0: espeak-ng is required (apt-get install espeak-ng; flite and festival are optional)" >&2
  exit 1
fi

"$py" "$root/tools/synth/synth_corpus.py" --out "$out" "$@"
for f in data/train/wav.scp data/test/wav.scp data/test/trials.kaldi data/noise/wav.scp \
  data/rirs/wav.scp; do
  [ -s "$out/$f" ] || { echo "$0: $out/$f missing or empty" >&2; exit 1; }
done
