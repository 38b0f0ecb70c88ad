#!/usr/bin/env bash
# The embedding stage of every recipe: average num_avg checkpoints (the last ones, or
# with --select best_valid those of the lowest validation EER) into
# models/avg_model.pt, then extract whole-utterance embeddings of each data dir into
# exp_dir/embeddings/<data dir name>/ (xvector.scp/.ark, mean_vec.npy).
#
#   tools/extract_embeddings.sh --exp_dir exp/x [--gpus "[0,1]"] data/vox1 data/vox2_dev
#
# Re-runnable: the average is redone only when a checkpoint is newer than it, and a
# set is extracted again only when the average is newer than its xvector.scp or the
# set was embedded with another --dtype or --utts_per_spk (recorded in the stage marker
# <set>/.extract.done, tools/stage_marker.sh; the .dtype / .utts_per_spk files of
# earlier versions are read once into it).
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

exp_dir=            # trained experiment (config.yaml, models/model_*.pt)
num_avg=            # (integer) checkpoints averaged; empty: num_avg of exp_dir/config.yaml
select=last         # last | best_valid: which checkpoints average_model.sh averages
gpus=               # "[0,1]": torchrun, one process per GPU; empty: one process (GPU 0 or CPU)
num_workers=1       # data loader workers per process
layer_scores=false  # also write layer_scores.npy (the backend's layer attention)
allow_pipes=false   # run Kaldi piped wav.scp entries ("cmd |") with a shell
dtype=float32       # frozen SSL forward: float32, bfloat16, float16 or auto (bf16 where faster)
utts_per_spk=0      # (integer) only the first N utterances of each speaker (0: all), e.g. for
                    # an AS-norm cohort of speaker means

help_message="Usage: tools/extract_embeddings.sh --exp_dir DIR [options] <data_dir>..."
# shellcheck source=parse_options.sh
. "$(dirname "${BASH_SOURCE[0]}")/parse_options.sh"
# shellcheck source=stage_marker.sh
. "$(dirname "${BASH_SOURCE[0]}")/stage_marker.sh"

if [ -z "$exp_dir" ] || [ $# -eq 0 ]; then echo "$help_message" >&2; exit 1; fi
"$(dirname "${BASH_SOURCE[0]}")/average_model.sh" --exp_dir "$exp_dir" --num_avg "$num_avg" \
  --select "$select"
avg=$exp_dir/models/avg_model.pt

case $dtype in
  float32|bfloat16|float16|auto) ;;
  *) echo "$0: --dtype must be one of float32 bfloat16 float16 auto, got '$dtype'" >&2; exit 1;;
esac
opts=(--model_dir "$exp_dir" --num_workers "$num_workers" --dtype "$dtype"
      --utts_per_spk "$utts_per_spk")
$layer_scores && opts+=(--layer_scores)
$allow_pipes && opts+=(--allow_pipes)
if [ -n "$gpus" ]; then
  ids=$(echo "$gpus" | tr -d '[] ')
  num_procs=$(echo "$ids" | awk -F, '{print NF}')
  run=(env CUDA_VISIBLE_DEVICES="$ids" torchrun --standalone --nnodes=1
       --nproc_per_node="$num_procs" -m wespeaker_lap.bin.extract --device cuda)
else
  run=(python -m wespeaker_lap.bin.extract --device auto)
fi
for data in "$@"; do
  out=$exp_dir/embeddings/$(basename "$data")
  marker=$out/.extract.done
  set_opts=("dtype=$dtype" "utts_per_spk=$utts_per_spk")
  if [ -f "$out/xvector.scp" ] && [ ! -e "$marker" ]; then  # embedded by an earlier version:
    # its .dtype (none: float32) and .utts_per_spk (none: all) files become the marker
    stage_done_with "$marker" "dtype=$(cat "$out/.dtype" 2>/dev/null || echo float32)" \
      "utts_per_spk=$(cat "$out/.utts_per_spk" 2>/dev/null || echo 0)"
    rm -f "$out/.dtype" "$out/.utts_per_spk"
  fi
  # a set is redone when the average is newer, or when its options changed
  if [ ! -f "$out/xvector.scp" ] || [ "$avg" -nt "$out/xvector.scp" ] \
     || ! stage_is_done "$marker" "${set_opts[@]}"; then
    rm -f "$marker"  # an interrupted redo must not pass for the old embeddings
    "${run[@]}" "${opts[@]}" --data "$data" --embed_dir "$out"
    stage_done_with "$marker" "${set_opts[@]}"
  fi
done
