#!/usr/bin/env bash
# The training stage of every recipe: wespeaker_lap.bin.train under torchrun, on one
# node (--standalone) or several (c10d rendezvous at HOST_NODE_ADDR: run the same
# command on every node). An interrupted run resumes after its last finished epoch
# (--checkpoint latest); a finished one (models/final_model.pt) is skipped.
#
#   tools/train.sh --config conf/x.yaml --exp_dir exp/x [--gpus "[0,1]"] \
#       [--num_nodes 2 --HOST_NODE_ADDR host:29400] -- --train_data data/train/raw.list ...
#
# Everything after "--" goes to train.py as config overrides (its grammar).
# Writes exp_dir/train_seconds (wall time of the run that finished training).
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

config=                         # training config (YAML, WeSpeaker grammar)
exp_dir=                        # experiment directory (config.yaml, models/, train.log)
gpus=                           # "[0,1]": one process per GPU on each node; empty: one CPU process
num_nodes=1                     # torchrun nodes; more than 1 needs HOST_NODE_ADDR
HOST_NODE_ADDR=localhost:29400  # c10d rendezvous endpoint host:port, reachable from every node
rdzv_id=${RDZV_ID:-wespeaker_lap}  # c10d run id: jobs that share an endpoint must differ

help_message="Usage: tools/train.sh --config X.yaml --exp_dir DIR [options] [-- overrides]"
split_overrides() {  # options before "--" stay in "$@", the rest go to train.py
  opts=()
  overrides=()
  while [ $# -gt 0 ]; do
    if [ "$1" = "--" ]; then shift; overrides=("$@"); break; fi
    opts+=("$1"); shift
  done
}
split_overrides "$@"
set -- "${opts[@]+"${opts[@]}"}"
# shellcheck source=parse_options.sh
. "$(dirname "${BASH_SOURCE[0]}")/parse_options.sh"

if [ -z "$config" ] || [ -z "$exp_dir" ]; then echo "$help_message" >&2; exit 1; fi
[ -f "$config" ] || { echo "$0: no such config: $config" >&2; exit 1; }
if [ -f "$exp_dir/models/final_model.pt" ]; then
  exit 0
fi

if [ -n "$gpus" ]; then
  num_procs=$(echo "$gpus" | tr -d '[] ' | awk -F, '{print NF}')
  device_opts=(--gpus "$gpus")
else
  num_procs=1
  device_opts=(--device cpu)
fi
if [ "$num_nodes" -gt 1 ]; then
  launch=(--nnodes="$num_nodes" --rdzv_backend=c10d --rdzv_endpoint="$HOST_NODE_ADDR"
          --rdzv_id="$rdzv_id")
else
  launch=(--standalone --nnodes=1)
fi
resume=()
if compgen -G "$exp_dir/models/state_*.pt" >/dev/null; then
  resume=(--checkpoint latest)  # go on after the last finished epoch
fi

start=$SECONDS
torchrun "${launch[@]}" --nproc_per_node="$num_procs" -m wespeaker_lap.bin.train \
  --config "$config" "${device_opts[@]}" --exp_dir "$exp_dir" \
  "${overrides[@]+"${overrides[@]}"}" "${resume[@]+"${resume[@]}"}"
echo $((SECONDS - start)) > "$exp_dir/train_seconds"
