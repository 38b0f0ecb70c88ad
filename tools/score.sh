#!/usr/bin/env bash
# The cosine scoring stage of every recipe: mean-subtracted cosine scoring of Kaldi
# trial lists, then EER / minDCF of every score file.
#
#   tools/score.sh --exp_dir exp/x --eval_set vox1 --mean_set vox2_dev \
#       [--json exp/x/scores/cosine.json] data/vox1/trials/vox1_O_cleaned.kaldi ...
#
# Embeddings are read from exp_dir/embeddings/<set>/. The score files go to
# <scores_dir>; their names come from python (bin/score.py prints them), and
# tools/score_norm.sh finds them the same way. Prints the score files written on
# stdout, the metrics on stderr.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

exp_dir=         # experiment with embeddings/<set>/xvector.scp
eval_set=        # embeddings/<eval_set> holds every trial utterance
mean_set=        # embeddings/<mean_set>/mean_vec.npy is subtracted (training set); empty: none
scores_dir=      # where score files go; empty: exp_dir/scores
json=            # also write the metrics to this JSON file
det_png=         # also draw the DET curves into this PNG

help_message="Usage: tools/score.sh --exp_dir DIR --eval_set SET [options] <trials>..."
# shellcheck source=parse_options.sh
. "$(dirname "${BASH_SOURCE[0]}")/parse_options.sh"

if [ -z "$exp_dir" ] || [ -z "$eval_set" ] || [ $# -eq 0 ]; then
  echo "$help_message" >&2; exit 1
fi
emb=$exp_dir/embeddings
scores_dir=${scores_dir:-$exp_dir/scores}
mean_opts=()
[ -n "$mean_set" ] && mean_opts=(--mean_vec "$emb/$mean_set/mean_vec.npy")

out=$(python -m wespeaker_lap.bin.score --embeddings "$emb/$eval_set/xvector.scp" \
  "${mean_opts[@]+"${mean_opts[@]}"}" --trials "$@" --output_dir "$scores_dir")
mapfile -t files <<< "$out"

metric_opts=()
[ -n "$json" ] && metric_opts+=(--json "$json")
[ -n "$det_png" ] && metric_opts+=(--det_png "$det_png")
python -m wespeaker_lap.bin.compute_metrics "${files[@]}" "${metric_opts[@]+"${metric_opts[@]}"}" >&2
printf "%s\n" "${files[@]}"
