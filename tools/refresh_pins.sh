#!/usr/bin/env bash
# Refresh tools/constraints.txt, the versions tools/install.sh installs by default: install
# the newest versions pyproject.toml allows into a throw-away venv
# (bash tools/install.sh --latest --no-apt), run the whole test suite there
# (tools/run_tests.sh: ruff, shellcheck, pytest), and only if it passes write that venv's
# versions (tools/pin_versions.py) over tools/constraints.txt. Review the diff and commit it.
#   bash tools/refresh_pins.sh             # tens of minutes: the whole suite runs
#   bash tools/refresh_pins.sh --keep      # keep the venv afterwards (its path is printed)
#   bash tools/refresh_pins.sh --out FILE  # write the new pins to FILE instead (to review)
#   bash tools/refresh_pins.sh --dry-run   # print the commands, run nothing
# torch stays at TORCH_VERSION (default: the torch line of tools/constraints.txt); set it to
# move torch too (e.g. TORCH_VERSION=2.14.0 bash tools/refresh_pins.sh).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
keep=false                            # keep the throw-away venv
dry=false                             # print the commands only
out=$root/tools/constraints.txt       # where the new pins go when the suite passes
while [ $# -gt 0 ]; do
  case $1 in
    --keep) keep=true; shift ;;
    --dry-run) dry=true; shift ;;
    --out)
      [ $# -ge 2 ] || { echo "refresh_pins.sh: --out needs a file name" >&2; exit 2; }
      out=$(cd "$(dirname "$2")" && pwd)/$(basename "$2"); shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "refresh_pins.sh: unknown option $1 (valid: --keep --out FILE --dry-run)" >&2
       exit 2 ;;
  esac
done

run() {  # print a command, then run it unless --dry-run
  echo "+ $*"
  $dry || "$@"
}

if $dry; then
  work=${TMPDIR:-/tmp}/wespeaker-lap-pins.XXXXXX
else
  work=$(mktemp -d "${TMPDIR:-/tmp}/wespeaker-lap-pins.XXXXXX")
  if $keep; then
    echo "refresh_pins.sh: the venv stays in $work/venv"
  else
    trap 'rm -rf "$work"' EXIT
  fi
fi
venv=$work/venv
cd "$root"
# the suite runs as CI runs it, with this venv's python first on PATH and no other tree
run env -u PYTHONPATH WESPEAKER_LAP_VENV="$venv" bash tools/install.sh --latest --no-apt
run env -u PYTHONPATH PATH="$venv/bin:$PATH" VIRTUAL_ENV="$venv" PYTHON="$venv/bin/python" \
  bash tools/run_tests.sh
run "$venv/bin/python" tools/pin_versions.py --out "$work/constraints.txt"
if $dry; then
  echo "+ diff -u tools/constraints.txt $work/constraints.txt; cp it to $out"
  exit 0
fi
if diff -u tools/constraints.txt "$work/constraints.txt"; then
  echo "refresh_pins.sh: the suite passed; the pins are unchanged"
else
  echo "refresh_pins.sh: the suite passed; the pins changed (diff above)"
fi
cp "$work/constraints.txt" "$out"
echo "refresh_pins.sh: wrote $out"
