#!/usr/bin/env bash
# The score-normalisation stage of every recipe: AS-norm of the cosine scores that
# tools/score.sh wrote (they are reused, not recomputed), then EER / minDCF of the
# cosine and normalised score files together.
#
#   tools/score_norm.sh --exp_dir exp/x --eval_set vox1 --mean_set vox2_dev \
#       --cohort_set vox2_dev --cohort_utt2spk data/vox2_dev/utt2spk --top_n 300 \
#       [--json exp/x/scores/metrics.json] data/vox1/trials/vox1_O_cleaned.kaldi ...
#
# The cosine score files are the ones python maps these trial lists to
# (bin/score.py --print_paths); a missing one means stage 5 has not run. Prints the
# normalised score files written on stdout, the metrics on stderr.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

exp_dir=         # experiment with embeddings/<set>/xvector.scp
eval_set=        # embeddings/<eval_set> holds every trial utterance
mean_set=        # embeddings/<mean_set>/mean_vec.npy is subtracted (as in tools/score.sh)
cohort_set=      # embeddings/<cohort_set> is the AS-norm cohort
cohort_utt2spk=  # average the cohort per speaker of this utt2spk; empty: one entry per utterance
top_n=           # (integer) AS-norm: top cohort scores per side; empty: the package default
scores_dir=      # where the cosine score files are and the normalised ones go; empty: exp_dir/scores
json=            # also write all metrics to this JSON file
det_png=         # also draw the DET curves of all score files into this PNG

help_message="Usage: tools/score_norm.sh --exp_dir DIR --eval_set SET --cohort_set SET [options] <trials>..."
# shellcheck source=parse_options.sh
. "$(dirname "${BASH_SOURCE[0]}")/parse_options.sh"
# one home for the default: wespeaker_lap.scoring.score_norm.DEFAULT_TOP_N
[ -n "$top_n" ] || top_n=$(python -c \
  "from wespeaker_lap.scoring.score_norm import DEFAULT_TOP_N; print(DEFAULT_TOP_N)")

if [ -z "$exp_dir" ] || [ -z "$eval_set" ] || [ -z "$cohort_set" ] || [ $# -eq 0 ]; then
  echo "$help_message" >&2; exit 1
fi
emb=$exp_dir/embeddings
scores_dir=${scores_dir:-$exp_dir/scores}
mean_opts=()
[ -n "$mean_set" ] && mean_opts=(--mean_vec "$emb/$mean_set/mean_vec.npy")

out=$(python -m wespeaker_lap.bin.score --print_paths --trials "$@" --output_dir "$scores_dir")
mapfile -t cosine <<< "$out"
for f in "${cosine[@]}"; do
  [ -f "$f" ] || { echo "$0: no cosine scores $f: run tools/score.sh (stage 5) first" >&2; exit 1; }
done

spk_opts=()
[ -n "$cohort_utt2spk" ] && spk_opts=(--cohort_utt2spk "$cohort_utt2spk")
out=$(python -m wespeaker_lap.bin.score_norm --scores "${cosine[@]}" \
  --embeddings "$emb/$eval_set/xvector.scp" --cohort_embeddings "$emb/$cohort_set/xvector.scp" \
  "${spk_opts[@]+"${spk_opts[@]}"}" "${mean_opts[@]+"${mean_opts[@]}"}" \
  --top_n "$top_n" --output_dir "$scores_dir")
mapfile -t normed <<< "$out"

metric_opts=()
[ -n "$json" ] && metric_opts+=(--json "$json")
[ -n "$det_png" ] && metric_opts+=(--det_png "$det_png")
python -m wespeaker_lap.bin.compute_metrics "${cosine[@]}" "${normed[@]}" \
  "${metric_opts[@]+"${metric_opts[@]}"}" >&2
printf "%s\n" "${normed[@]}"
