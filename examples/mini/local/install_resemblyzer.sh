#!/usr/bin/env bash
# The optional peer of the backend comparison: a separate virtualenv with Resemblyzer
# (a GE2E speaker encoder pre-trained on real speech; its weights ship in the wheel),
# for local/compare_backends.sh --systems resemblyzer. Not part of the project's
# install or CI, and never installed into the project's .venv.
#
#   bash local/install_resemblyzer.sh                        # ../../.venv-resemblyzer
#   bash local/install_resemblyzer.sh --venv /tmp/rz --torch_index <CPU wheel index URL>
#
# torch is the project's pin (tools/constraints.txt), installed first and held by the
# same constraints while the rest resolves, so pip never swaps in another torch (on
# Linux PyPI's torch is the CUDA build: pass PyTorch's CPU wheel index as
# --torch_index to get the CPU one). Resemblyzer goes in with --no-deps: it declares
# webrtcvad (a C build; webrtcvad-wheels gives the same module prebuilt) and the old
# `typing` backport; its real dependencies are installed by name instead.
# Paths are relative to examples/mini.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

venv=../../.venv-resemblyzer  # the virtualenv made (git ignores it at the repo root)
python=python3                # the interpreter the venv is made from (one torch has wheels for)
torch_index=                  # index URL for torch only; empty: pip's configured indexes
resemblyzer_version=0.1.4     # the Resemblyzer release measured in the README

help_message="Usage: bash local/install_resemblyzer.sh [--venv DIR] [--torch_index URL]"
# shellcheck source=../tools/parse_options.sh
. "$(dirname "${BASH_SOURCE[0]}")/../tools/parse_options.sh"  # before the cd: it reads $0
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { echo "$(date '+%F %T') (install_resemblyzer.sh) $*"; }
pins=../../tools/constraints.txt
torch_pin=$(grep -m1 '^torch==' "$pins") || {
  echo "install_resemblyzer.sh: no torch== line in $pins" >&2; exit 1; }

if [ ! -x "$venv/bin/python" ]; then
  log "virtualenv $venv (from $python)"
  "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip install --disable-pip-version-check)
log "$torch_pin${torch_index:+ from $torch_index}"
"${pip[@]}" ${torch_index:+--index-url "$torch_index"} "$torch_pin"
log "Resemblyzer $resemblyzer_version and its dependencies, constrained by $pins"
"${pip[@]}" -c "$pins" numpy scipy librosa soundfile webrtcvad-wheels kaldiio
"${pip[@]}" -c "$pins" --no-deps "Resemblyzer==$resemblyzer_version"

# the torch pin held, and the encoder loads its bundled weights
"$venv/bin/python" - "$torch_pin" <<'EOF'
import sys

import torch
from resemblyzer import VoiceEncoder

want = sys.argv[1].split("==")[1]
if torch.__version__.split("+")[0] != want:
    sys.exit(f"install_resemblyzer.sh: torch {torch.__version__} in the venv, expected {want}")
VoiceEncoder(device="cpu", verbose=False)
print(f"torch {torch.__version__}; Resemblyzer's VoiceEncoder loads")
EOF
log "done: $venv (bash local/compare_backends.sh --systems resemblyzer --resemblyzer_venv $venv)"
