#!/usr/bin/env bash
# The mini recipe's backend comparison: on the same corpus and frozen SSL model
# (stages 1-2 of run.sh), train every backend with several seeds, plus LAP_ASTP on
# the same architecture with random weights, and tabulate mean +- std EER (with the
# mean speaker-bootstrap 95% interval) on the in-domain and unseen-voice test sets.
#
#   bash local/compare_backends.sh                      # 3 seeds, all systems
#   bash local/compare_backends.sh --seeds "1" --systems "lap_astp superb_astp"
#   bash local/compare_backends.sh --systems resemblyzer  # the real-speech peer alone
#
# Each run is run.sh --stage 3 (train, extract, score) into exp/<config>_seed<N>
# (random weights: exp/lap_astp_random_ssl_seed<N>); finished runs are skipped,
# so an interrupted comparison goes on where it stopped. Writes exp/compare.md.
#
# The peer `resemblyzer` is Resemblyzer's GE2E encoder, pre-trained by its authors on
# thousands of real speakers (not on this corpus): one row, no seeds, from its own
# venv (bash local/install_resemblyzer.sh; in the default systems only when that venv
# exists). It embeds the same data dirs (local/embed_resemblyzer.py, one thread) into
# exp/resemblyzer/embeddings and scores the same trials with the project's scoring as
# stages 5-6 do (training mean subtracted, cosine and AS-norm); exp/resemblyzer_plain_cosine
# holds plain cosine of the same embeddings (no mean subtracted, no normalisation).
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

seeds="1 2 3"                   # backend training seeds
systems=                        # empty: the backends, random_lap_astp, resemblyzer if installed
resemblyzer_venv=../../.venv-resemblyzer  # local/install_resemblyzer.sh's venv, from examples/mini
top_n=100                       # resemblyzer's AS-norm: top cohort scores per side, as run.sh's
workdir=.                       # as run.sh's --workdir
quick=false                     # as run.sh's --quick
seed=7                          # corpus seed (run.sh --seed)

help_message="Usage: bash local/compare_backends.sh [--seeds \"1 2 3\"] [--systems \"...\"]"
# shellcheck source=../tools/parse_options.sh
. "$(dirname "${BASH_SOURCE[0]}")/../tools/parse_options.sh"  # before the cd: it reads $0
cd "$(dirname "${BASH_SOURCE[0]}")/.."

backends="lap_astp superb_astp lastlayer_astp mhfa ssl_ecapa_tdnn"
install_hint="make it with: bash local/install_resemblyzer.sh --venv $resemblyzer_venv"
if [ -z "$systems" ]; then
  systems="$backends random_lap_astp"
  if [ -x "$resemblyzer_venv/bin/python" ]; then
    systems+=" resemblyzer"
  else
    echo "compare_backends.sh: resemblyzer left out: no venv $resemblyzer_venv ($install_hint)" >&2
  fi
fi
# every system is known before any work
need_ssl=false
for sys in $systems; do
  case $sys in
    resemblyzer)
      if [ ! -x "$resemblyzer_venv/bin/python" ]; then
        echo "compare_backends.sh: system resemblyzer needs the venv $resemblyzer_venv" \
          "(no bin/python there; $install_hint)" >&2
        exit 1
      fi ;;
    random_lap_astp) need_ssl=true ;;
    *)
      if [ ! -f "conf/$sys.yaml" ]; then
        echo "compare_backends.sh: unknown system '$sys': not random_lap_astp, resemblyzer" \
          "or a backend config conf/$sys.yaml" >&2
        exit 1
      fi
      need_ssl=true ;;
  esac
done
# shellcheck source=../path.sh
. ./path.sh

log() { echo "$(date '+%F %T') (compare_backends.sh) $*"; }
tag=; $quick && tag=_quick
exp=$workdir/exp$tag
common=(--workdir "$workdir" --quick "$quick" --seed "$seed")

# corpus and SSL model (skipped when done); the peer needs the corpus only
last=1; $need_ssl && last=2
bash run.sh "${common[@]}" --stop_stage "$last"
data=$workdir/corpus$tag/data
if [[ " $systems " == *" random_lap_astp "* ]] && [ ! -f "$exp/ssl_random/.done" ]; then
  log "random-weight SSL model of the same architecture: $exp/ssl_random"
  python -m wespeaker_lap.bin.pretrain_ssl --config ../../conf/ssl_hubert_mini.yaml \
    --wav_scp "$data/train/wav.scp" --out "$exp/ssl_random" --steps 0 \
    --seed "$seed"
  touch "$exp/ssl_random/.done"
fi

# the peer: embed train (its mean and the AS-norm cohort) and every test set once, then
# score the trials as run.sh's stages 5-6 do, and plain cosine beside it
score_resemblyzer() {
  local d=$exp/resemblyzer plain=$exp/resemblyzer_plain_cosine x sets=(test) ci=() ci_plain=()
  local trials=trials.kaldi cohort_size s p cosine normed
  [ -f "$data/test_unseen/$trials" ] && sets+=(test_unseen)
  mkdir -p "$d" "$plain"
  for x in train "${sets[@]}"; do
    if [ ! -f "$d/embeddings/$x/xvector.scp" ]; then
      log "resemblyzer: embedding $data/$x"
      OMP_NUM_THREADS=1 "$resemblyzer_venv/bin/python" local/embed_resemblyzer.py \
        --data "$data/$x" --embed_dir "$d/embeddings/$x"
    fi
  done
  cohort_size=$(wc -l < "$data/train/spk2utt")
  if [ "$top_n" -gt "$cohort_size" ]; then top_n=$cohort_size; fi  # as run.sh cuts it
  for x in "${sets[@]}"; do
    s=$d/scores; p=$plain/scores
    [ "$x" = test ] || { s=$s/$x; p=$p/$x; }
    cosine=$(tools/score.sh --exp_dir "$d" --eval_set "$x" --mean_set train --scores_dir "$s" \
      "$data/$x/$trials")
    normed=$(tools/score_norm.sh --exp_dir "$d" --eval_set "$x" --mean_set train \
      --cohort_set train --cohort_utt2spk "$data/train/utt2spk" --top_n "$top_n" \
      --scores_dir "$s" --json "$s/metrics.json" "$data/$x/$trials")
    ci+=(--set "$x" "$data/$x/utt2spk" "$cosine" --set "$x" "$data/$x/utt2spk" "$normed")
    cosine=$(tools/score.sh --exp_dir "$d" --eval_set "$x" --scores_dir "$p" "$data/$x/$trials")
    ci_plain+=(--set "$x" "$data/$x/utt2spk" "$cosine")
  done
  python local/score_ci.py --json "$d/scores/metrics_ci.json" "${ci[@]}" | tee "$d/results_ci.md"
  python local/score_ci.py --json "$plain/scores/metrics_ci.json" "${ci_plain[@]}" \
    | tee "$plain/results_ci.md"
  # compare_table.py's name for a peer row (no seeds)
  local label="Resemblyzer GE2E, pre-trained on thousands of real speakers"
  echo "$label" > "$d/peer.txt"
  echo "$label, no mean subtracted" > "$plain/peer.txt"
}

dirs=()
for sys in $systems; do
  if [ "$sys" = resemblyzer ]; then
    if [ ! -f "$exp/resemblyzer/peer.txt" ] || [ ! -f "$exp/resemblyzer_plain_cosine/peer.txt" ]
    then
      score_resemblyzer
    fi
    dirs+=("$exp/resemblyzer" "$exp/resemblyzer_plain_cosine")
    continue
  fi
  for s in $seeds; do
    if [ "$sys" = random_lap_astp ]; then
      opts=(--config conf/lap_astp.yaml --ssl_model "$exp/ssl_random"
            --suffix "_random_ssl_seed$s")
      d=$exp/lap_astp_random_ssl_seed$s
    else
      opts=(--config "conf/$sys.yaml" --suffix "_seed$s")
      d=$exp/${sys}_seed$s
    fi
    if [ ! -f "$d/scores/metrics_ci.json" ]; then
      log "$sys, seed $s -> $d"
      bash run.sh "${common[@]}" --stage 3 --train_seed "$s" "${opts[@]}"
    fi
    dirs+=("$d")
  done
done
python local/compare_table.py "${dirs[@]}" | tee "$exp/compare.md"
