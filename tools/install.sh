#!/usr/bin/env bash
# Idempotent installer used by both README commands.
#   bash tools/install.sh          # .venv with torch (CPU wheel first), the package (editable,
#                                  # dev and export extras: pytest, ruff, peft, onnx, onnxruntime)
#                                  # and, when run as root, the Debian packages the recipes need
#   bash tools/install.sh --no-apt # skip the Debian packages
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${WESPEAKER_LAP_VENV:-$root/.venv}
torch_version=${TORCH_VERSION:-2.13.0}
apt=true
[ "${1:-}" = "--no-apt" ] && apt=false

# Debian packages: TTS engines for the embedded corpus, sox/ffmpeg for audio, shellcheck for the tests.
# TTS voices of Debian main for the mini corpus: festival's English voices, and its voices of
# other languages (real speakers' timbre; the Czech and Finnish ones form the unseen-voice test)
apt_pkgs=(espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts
          festvox-italp16k festvox-itapc16k festvox-ca-ona-hts festvox-ru festvox-czech-dita
          festvox-czech-krb festvox-czech-machac festvox-czech-ph festvox-suopuhe-lj
          festvox-suopuhe-mv sox ffmpeg shellcheck)
if $apt; then
  missing=()
  for p in "${apt_pkgs[@]}"; do
    dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
      echo "install.sh: apt-get install ${missing[*]}"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    else
      echo "install.sh: not root; install these Debian packages yourself:" >&2
      echo "  sudo apt-get update && sudo apt-get install -y ${missing[*]}" >&2
    fi
  fi
fi

if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
py="$venv/bin/python"
"$py" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# torch first: with it installed, the package's unpinned torch requirement is already met,
# so pip never resolves another (CUDA) build.
if ! "$py" -c "import torch" >/dev/null 2>&1; then
  "$py" -m pip install -q "torch==$torch_version"
fi
"$py" -m pip install -q -e "${root}[dev,export]"
"$py" -c "import torch, transformers, wespeaker_lap; print('install.sh: ok: torch', torch.__version__, \
'transformers', transformers.__version__, 'wespeaker_lap', wespeaker_lap.__version__)"
