#!/usr/bin/env bash
# The calibration stage of the recipes: QMF (logistic regression on the score and
# quality measures: log durations, embedding norms, cohort means) fitted on labelled
# calibration trials, applied to already scored evaluation lists, then EER / minDCF.
#
#   tools/calibrate.sh --exp_dir exp/x --cal_set vox2_dev --cal_data data/vox2_dev \
#       --cal_trials data/vox2_dev/cal_trials.kaldi --eval_set vox1 --eval_data data/vox1 \
#       --mean_set vox2_dev --cohort_set vox2_dev --cohort_utt2spk data/vox2_dev/utt2spk \
#       data/vox1/trials/vox1_O_cleaned.kaldi ...
#
# The calibration trials are scored like the evaluation ones (tools/score.sh, same
# mean and AS-norm cohort) into <scores_dir>/cal/; the evaluation lists must have been
# scored by tools/score.sh into <scores_dir> already. With a cohort the AS-norm scores
# are calibrated (<trials>.asnorm<N>.qmf.score), else the cosine ones (<trials>.qmf.score).
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

exp_dir=         # experiment with embeddings/<set>/xvector.scp
cal_set=         # embeddings/<cal_set> holds every calibration trial utterance
cal_data=        # data dir of the calibration utterances (utt2dur)
cal_trials=      # labelled calibration trials (Kaldi format)
eval_set=        # embeddings/<eval_set> holds every evaluation trial utterance
eval_data=       # data dir of the evaluation utterances (utt2dur)
mean_set=        # embeddings/<mean_set>/mean_vec.npy is subtracted; empty: none
cohort_set=      # AS-norm cohort (and cohort_mean_* quality measures); empty: cosine scores
cohort_utt2spk=  # average the cohort per speaker of this utt2spk
top_n=           # (integer) AS-norm and cohort_mean_*: top cohort scores per side; empty: the package default
scores_dir=      # empty: exp_dir/scores
json=            # also write the calibrated systems' metrics to this JSON file

help_message="Usage: tools/calibrate.sh --exp_dir DIR --cal_set SET --cal_data DIR \
--cal_trials FILE --eval_set SET --eval_data DIR [options] <eval trials>..."
# shellcheck source=parse_options.sh
. "$(dirname "${BASH_SOURCE[0]}")/parse_options.sh"
# one home for the default: wespeaker_lap.scoring.score_norm.DEFAULT_TOP_N
[ -n "$top_n" ] || top_n=$(python -c \
  "from wespeaker_lap.scoring.score_norm import DEFAULT_TOP_N; print(DEFAULT_TOP_N)")

for v in exp_dir cal_set cal_data cal_trials eval_set eval_data; do
  [ -n "${!v}" ] || { echo "$0: --$v is required" >&2; echo "$help_message" >&2; exit 1; }
done
[ $# -gt 0 ] || { echo "$help_message" >&2; exit 1; }
tools=$(dirname "${BASH_SOURCE[0]}")
emb=$exp_dir/embeddings
scores_dir=${scores_dir:-$exp_dir/scores}

# the calibration trials, scored as the evaluation ones were; the file to fit on is the
# last one a script printed (AS-norm when there is a cohort, else cosine)
cal_scores=$("$tools/score.sh" --exp_dir "$exp_dir" --eval_set "$cal_set" --mean_set "$mean_set" \
  --scores_dir "$scores_dir/cal" "$cal_trials")
if [ -n "$cohort_set" ]; then
  cal_scores=$("$tools/score_norm.sh" --exp_dir "$exp_dir" --eval_set "$cal_set" \
    --mean_set "$mean_set" --cohort_set "$cohort_set" --cohort_utt2spk "$cohort_utt2spk" \
    --top_n "$top_n" --scores_dir "$scores_dir/cal" "$cal_trials")
fi

# the evaluation lists' score files of the same kind, as python names them
out=$(python -m wespeaker_lap.bin.score --print_paths --trials "$@" --output_dir "$scores_dir")
mapfile -t inputs <<< "$out"
suffix=
if [ -n "$cohort_set" ]; then
  suffix=.asnorm$top_n
  out=$(python -m wespeaker_lap.bin.score_norm --print_paths --scores "${inputs[@]}" \
    --top_n "$top_n" --output_dir "$scores_dir")
  mapfile -t inputs <<< "$out"
fi
sources=()
[ -n "$mean_set" ] && sources+=(--mean_vec "$emb/$mean_set/mean_vec.npy")
features=(score log_dur_enroll log_dur_test norm_enroll norm_test)
if [ -n "$cohort_set" ]; then
  features+=(cohort_mean_enroll cohort_mean_test)
  sources+=(--cohort_embeddings "$emb/$cohort_set/xvector.scp")
  [ -n "$cohort_utt2spk" ] && sources+=(--cohort_utt2spk "$cohort_utt2spk")
fi
model=$scores_dir/qmf$suffix.json
python -m wespeaker_lap.bin.calibrate fit --scores "$cal_scores" \
  --model "$model" --features "${features[@]}" --top_n "$top_n" \
  --embeddings "$emb/$cal_set/xvector.scp" --utt2dur "$cal_data/utt2dur" \
  "${sources[@]+"${sources[@]}"}"

out=$(python -m wespeaker_lap.bin.calibrate apply --model "$model" --scores "${inputs[@]}" \
  --output_dir "$scores_dir" --embeddings "$emb/$eval_set/xvector.scp" \
  --utt2dur "$eval_data/utt2dur" "${sources[@]+"${sources[@]}"}")
mapfile -t outputs <<< "$out"
metric_opts=()
[ -n "$json" ] && metric_opts=(--json "$json")
python -m wespeaker_lap.bin.compute_metrics "${outputs[@]}" "${metric_opts[@]+"${metric_opts[@]}"}"
