#!/usr/bin/env bash
# One node's share of a Slurm training job: reads the job's layout from Slurm's
# environment and runs a recipe (or tools/train.sh) with the matching
# --gpus / --num_nodes / --HOST_NODE_ADDR, so that its torchrun joins the others
# through a c10d rendezvous on the job's first node. train.sbatch runs it once per
# node with srun; inside an salloc allocation run it the same way:
#
#   srun --ntasks-per-node=1 tools/slurm/launch.sh examples/voxceleb/v2_lap/run.sh \
#       --stage 3 --stop_stage 3
#   srun --ntasks-per-node=1 tools/slurm/launch.sh tools/train.sh --config conf/x.yaml \
#       --exp_dir exp/x -- --train_data data/train/shard.list ...
#
# Options given after the command win over the derived ones (parse_options.sh takes
# the last value). --dry_run prints the command instead of running it.
#
# From Slurm:
#   nodes      SLURM_NNODES (this step), else SLURM_JOB_NUM_NODES; default 1
#   rendezvous the first host of SLURM_STEP_NODELIST / SLURM_JOB_NODELIST
#              (`scontrol show hostnames`, or a built-in parser when scontrol is absent)
#   port       RDZV_PORT if set, else 20000 + SLURM_JOB_ID % 10000: one port per job,
#              below Linux's ephemeral range (32768-60999), so no two jobs whose ids
#              differ by less than 10000 share one, and no outgoing connection holds it
#   run id     RDZV_ID if set, else slurm-SLURM_JOB_ID (tools/train.sh reads RDZV_ID)
#   GPUs       SLURM_GPUS_ON_NODE, else the devices in CUDA_VISIBLE_DEVICES; none:
#              one CPU process per node. Indices count inside the job's own devices
#              (Slurm sets CUDA_VISIBLE_DEVICES per job).
set -euo pipefail

dry_run=false
if [ "${1:-}" = "--dry_run" ]; then dry_run=true; shift; fi
if [ $# -lt 1 ]; then
  echo "Usage: $0 [--dry_run] RECIPE_OR_TRAIN_SH [options...]" >&2
  exit 1
fi
cmd=$1; shift
[ -f "$cmd" ] || { echo "$0: no such script: $cmd (from $PWD)" >&2; exit 1; }

# The first host of a Slurm host list: "gpu[07-08,11],cpu1" -> gpu07,
# "rack[2-3]-n[1-4]" -> rack2-n1 (what `scontrol show hostnames | head -n1` prints).
first_host() {
  local list=$1 out="" range
  if command -v scontrol >/dev/null 2>&1; then
    out=$(scontrol show hostnames "$list")  # all of it: `| head -1` would SIGPIPE it
    echo "${out%%$'\n'*}"
    return
  fi
  while [ -n "$list" ]; do
    case $list in
      \[*)
        range=${list#\[}; range=${range%%\]*}
        out+=${range%%[,-]*}
        list=${list#*\]} ;;
      ,*) break ;;
      *) out+=${list:0:1}; list=${list:1} ;;
    esac
  done
  echo "$out"
}

gpu_list() {  # "[0,1,...,n-1]" for n GPUs on this node, empty for none
  local n=$1 i out=""
  [ "$n" -gt 0 ] || return 0
  for ((i = 0; i < n; i++)); do out+="${out:+,}$i"; done
  echo "[$out]"
}

num_nodes=${SLURM_NNODES:-${SLURM_JOB_NUM_NODES:-1}}
nodelist=${SLURM_STEP_NODELIST:-${SLURM_JOB_NODELIST:-${SLURM_NODELIST:-}}}
if [ "$num_nodes" -gt 1 ]; then
  [ -n "$nodelist" ] || { echo "$0: $num_nodes nodes but no SLURM_JOB_NODELIST" >&2; exit 1; }
  [ -n "${SLURM_JOB_ID:-}${RDZV_PORT:-}" ] ||
    { echo "$0: neither SLURM_JOB_ID nor RDZV_PORT is set: no port for the rendezvous" >&2
      exit 1; }
  head=$(first_host "$nodelist")
  [ -n "$head" ] || { echo "$0: no host in SLURM_JOB_NODELIST='$nodelist'" >&2; exit 1; }
else
  head=localhost  # one node: tools/train.sh uses torchrun --standalone (a free port)
fi
port=${RDZV_PORT:-$((20000 + ${SLURM_JOB_ID:-0} % 10000))}
export RDZV_ID=${RDZV_ID:-slurm-${SLURM_JOB_ID:-local}}

if [ -n "${SLURM_GPUS_ON_NODE:-}" ]; then
  num_gpus=${SLURM_GPUS_ON_NODE}
elif [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
  num_gpus=$(echo "$CUDA_VISIBLE_DEVICES" | awk -F, '{print NF}')
else
  num_gpus=0
fi
gpus=$(gpu_list "$num_gpus")

launch=(bash "$cmd" --gpus "$gpus" --num_nodes "$num_nodes" --HOST_NODE_ADDR "$head:$port" "$@")
echo "$(hostname): node ${SLURM_NODEID:-0} of $num_nodes, rendezvous $head:$port" \
  "(id $RDZV_ID), gpus '${gpus}'" >&2
if $dry_run; then
  printf '%q ' "${launch[@]}"; echo
else
  exec "${launch[@]}"
fi
