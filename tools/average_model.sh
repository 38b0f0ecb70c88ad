#!/usr/bin/env bash
# Average the last num_avg checkpoints of an experiment into models/avg_model.pt
# (WeSpeaker's stage 4). Re-runnable: redone only when a checkpoint is newer than it.
#
#   tools/average_model.sh --exp_dir exp/x [--num_avg 2]
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

exp_dir=  # trained experiment (config.yaml, models/model_*.pt)
num_avg=  # (integer) checkpoints averaged; empty: num_avg of exp_dir/config.yaml

help_message="Usage: tools/average_model.sh --exp_dir DIR [--num_avg N]"
# shellcheck source=parse_options.sh
. "$(dirname "${BASH_SOURCE[0]}")/parse_options.sh"

if [ -z "$exp_dir" ]; then echo "$help_message" >&2; exit 1; fi
models=$exp_dir/models
avg=$models/avg_model.pt
if [ -z "$num_avg" ]; then
  num_avg=$(python -c "import yaml, sys; print(yaml.safe_load(open(sys.argv[1]))['num_avg'])" \
    "$exp_dir/config.yaml")
fi
if [ ! -f "$avg" ] || [ -n "$(find "$models" -name 'model_*.pt' -newer "$avg")" ]; then
  python -m wespeaker_lap.bin.average_model --dst_model "$avg" --src_path "$models" \
    --num "$num_avg"
fi
