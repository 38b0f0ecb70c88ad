#!/usr/bin/env bash
# Average num_avg checkpoints of an experiment into models/avg_model.pt (WeSpeaker's
# stage 4): the last ones (--select last) or those with the lowest validation EER in
# exp_dir/train_log.jsonl (--select best_valid). Re-runnable: redone only when a
# checkpoint or the training log is newer than it, or the selection changed.
#
#   tools/average_model.sh --exp_dir exp/x [--num_avg 2] [--select best_valid]
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

exp_dir=  # trained experiment (config.yaml, models/model_*.pt)
num_avg=  # (integer) checkpoints averaged; empty: num_avg of exp_dir/config.yaml
select=last  # last | best_valid (the epochs with the lowest validation EER)

help_message="Usage: tools/average_model.sh --exp_dir DIR [--num_avg N] [--select last|best_valid]"
# shellcheck source=parse_options.sh
. "$(dirname "${BASH_SOURCE[0]}")/parse_options.sh"

if [ -z "$exp_dir" ]; then echo "$help_message" >&2; exit 1; fi
case $select in
  last|best_valid) ;;
  *) echo "average_model.sh: --select must be last or best_valid, got '$select'" >&2; exit 1 ;;
esac
models=$exp_dir/models
avg=$models/avg_model.pt
args_file=$models/.avg_model.args  # the selection avg_model.pt was made with
if [ -z "$num_avg" ]; then
  num_avg=$(python -c "import yaml, sys; print(yaml.safe_load(open(sys.argv[1]))['num_avg'])" \
    "$exp_dir/config.yaml")
fi
if [ ! -f "$avg" ] || [ -n "$(find "$models" -name 'model_*.pt' -newer "$avg")" ] \
    || [ "$(cat "$args_file" 2>/dev/null)" != "$select $num_avg" ] \
    || { [ -f "$exp_dir/train_log.jsonl" ] && [ "$exp_dir/train_log.jsonl" -nt "$avg" ]; }; then
  python -m wespeaker_lap.bin.average_model --dst_model "$avg" --src_path "$models" \
    --num "$num_avg" --select "$select"
  echo "$select $num_avg" > "$args_file"
fi
