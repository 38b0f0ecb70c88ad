#!/usr/bin/env bash
# The scoring stages of every recipe: mean-subtracted cosine scoring of Kaldi trial
# lists, optionally AS-norm against a cohort, then EER / minDCF of every score file.
#
#   tools/score.sh --exp_dir exp/x --eval_set vox1 --mean_set vox2_dev \
#       [--cohort_set vox2_dev --cohort_utt2spk data/vox2_dev/utt2spk --top_n 300] \
#       [--json exp/x/scores/metrics.json] data/vox1/trials/vox1_O_cleaned.kaldi ...
#
# Embeddings are read from exp_dir/embeddings/<set>/. Writes <scores_dir>/<trials>.score
# and, with a cohort, <trials>.asnorm<top_n>.score.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

exp_dir=         # experiment with embeddings/<set>/xvector.scp
eval_set=        # embeddings/<eval_set> holds every trial utterance
mean_set=        # embeddings/<mean_set>/mean_vec.npy is subtracted (training set); empty: none
cohort_set=      # embeddings/<cohort_set> is the AS-norm cohort; empty: cosine only
cohort_utt2spk=  # average the cohort per speaker of this utt2spk; empty: one entry per utterance
top_n=300        # AS-norm: top cohort scores per side
scores_dir=      # where score files go; empty: exp_dir/scores
json=            # also write all metrics to this JSON file
det_png=         # also draw the DET curves of all score files into this PNG

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

python -m wespeaker_lap.bin.score --embeddings "$emb/$eval_set/xvector.scp" \
  "${mean_opts[@]+"${mean_opts[@]}"}" --trials "$@" --output_dir "$scores_dir"
files=()
for t in "$@"; do files+=("$scores_dir/$(basename "$t").score"); done

if [ -n "$cohort_set" ]; then
  spk_opts=()
  [ -n "$cohort_utt2spk" ] && spk_opts=(--cohort_utt2spk "$cohort_utt2spk")
  python -m wespeaker_lap.bin.score_norm --scores "${files[@]}" \
    --embeddings "$emb/$eval_set/xvector.scp" --cohort_embeddings "$emb/$cohort_set/xvector.scp" \
    "${spk_opts[@]+"${spk_opts[@]}"}" "${mean_opts[@]+"${mean_opts[@]}"}" \
    --top_n "$top_n" --output_dir "$scores_dir"
  for t in "$@"; do files+=("$scores_dir/$(basename "$t").asnorm$top_n.score"); done
fi

metric_opts=()
[ -n "$json" ] && metric_opts+=(--json "$json")
[ -n "$det_png" ] && metric_opts+=(--det_png "$det_png")
python -m wespeaker_lap.bin.compute_metrics "${files[@]}" "${metric_opts[@]+"${metric_opts[@]}"}"
