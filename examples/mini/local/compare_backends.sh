#!/usr/bin/env bash
# The mini recipe's backend comparison: on the same corpus and frozen SSL model
# (stages 1-2 of run.sh), train every backend with several seeds, plus LAP_ASTP on
# the same architecture with random weights, and tabulate mean +- std EER (with the
# mean speaker-bootstrap 95% interval) on the in-domain and unseen-voice test sets.
#
#   bash local/compare_backends.sh                      # 3 seeds, all systems
#   bash local/compare_backends.sh --seeds "1" --systems "lap_astp superb_astp"
#
# Each run is run.sh --stage 3 (train, extract, score) into exp/<config>_seed<N>
# (random weights: exp/lap_astp_random_ssl_seed<N>); finished runs are skipped,
# so an interrupted comparison goes on where it stopped. Writes exp/compare.md.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

seeds="1 2 3"                   # backend training seeds
systems="lap_astp superb_astp lastlayer_astp mhfa ssl_ecapa_tdnn random_lap_astp"
workdir=.                       # as run.sh's --workdir
quick=false                     # as run.sh's --quick
seed=7                          # corpus seed (run.sh --seed)

help_message="Usage: bash local/compare_backends.sh [--seeds \"1 2 3\"] [--systems \"...\"]"
# shellcheck source=../tools/parse_options.sh
. "$(dirname "${BASH_SOURCE[0]}")/../tools/parse_options.sh"  # before the cd: it reads $0
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=../path.sh
. ./path.sh

log() { echo "$(date '+%F %T') (compare_backends.sh) $*"; }
tag=; $quick && tag=_quick
exp=$workdir/exp$tag
common=(--workdir "$workdir" --quick "$quick" --seed "$seed")

bash run.sh "${common[@]}" --stop_stage 2  # corpus and SSL model (skipped when done)
if [[ " $systems " == *" random_lap_astp "* ]] && [ ! -f "$exp/ssl_random/.done" ]; then
  log "random-weight SSL model of the same architecture: $exp/ssl_random"
  python -m wespeaker_lap.bin.pretrain_ssl --config ../../conf/ssl_hubert_mini.yaml \
    --wav_scp "$workdir/corpus$tag/data/train/wav.scp" --out "$exp/ssl_random" --steps 0 \
    --seed "$seed"
  touch "$exp/ssl_random/.done"
fi

dirs=()
for sys in $systems; do
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
