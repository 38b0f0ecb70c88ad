#!/usr/bin/env bash
# Idempotent installer used by both README commands.
#   bash tools/install.sh          # .venv with torch (CPU wheel first), the package (editable,
#                                  # dev and export extras: pytest, ruff, peft, onnx, onnxruntime)
#                                  # at the versions the tests passed with (tools/constraints.txt)
#                                  # and, when run as root, the Debian packages the recipes need
#   bash tools/install.sh --latest # resolve afresh: the newest versions pyproject.toml allows
#                                  # (upgrading an existing venv; torch stays where it is)
#   bash tools/install.sh --no-apt # skip the Debian packages (combines with --latest)
# Environment: WESPEAKER_LAP_VENV (default: .venv here), TORCH_VERSION (default: the torch
# line of tools/constraints.txt). tools/refresh_pins.sh renews the constraints.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${WESPEAKER_LAP_VENV:-$root/.venv}
constraints=$root/tools/constraints.txt
apt=true
latest=false
for arg in "$@"; do
  case $arg in
    --no-apt) apt=false ;;
    --latest) latest=true ;;
    -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $arg (valid: --latest --no-apt)" >&2; exit 2 ;;
  esac
done
pinned_torch=$(sed -n 's/^torch==//p' "$constraints")
if [ -z "$pinned_torch" ]; then
  echo "install.sh: no torch== line in $constraints" >&2; exit 1
fi
torch_version=${TORCH_VERSION:-$pinned_torch}

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
installed_torch=$("$py" -c 'import importlib.metadata as m; print(m.version("torch"))' \
  2>/dev/null || true)
want_torch=${installed_torch:-$torch_version}

# What pip may choose. Never another torch: it is installed first (at TORCH_VERSION) and stays.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if $latest; then
  echo "torch==$want_torch" > "$tmp/constraints.txt"
  pin=(--upgrade --upgrade-strategy eager -c "$tmp/constraints.txt")
elif [ "${want_torch%%+*}" = "$pinned_torch" ]; then
  pin=(-c "$constraints")
else
  # another torch may require other versions of what only it pulls: leave those unpinned
  echo "install.sh: torch $want_torch is not the tested $pinned_torch; its block of" \
    "tools/constraints.txt is left out"
  sed '/^# torch block/,/^# end of the torch block/d' "$constraints" > "$tmp/constraints.txt"
  pin=(-c "$tmp/constraints.txt")
fi

if [ -z "$installed_torch" ]; then
  "$py" -m pip install -q "${pin[@]}" "torch==$torch_version"
fi
"$py" -m pip install -q "${pin[@]}" -e "${root}[dev,export]"
"$py" -c "import torch, transformers, wespeaker_lap; print('install.sh: ok: torch', torch.__version__, \
'transformers', transformers.__version__, 'wespeaker_lap', wespeaker_lap.__version__)"
