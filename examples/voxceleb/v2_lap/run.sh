#!/usr/bin/env bash
# VoxCeleb recipe: LAP backends on a pre-trained SSL model, trained on VoxCeleb2 dev and
# evaluated on the cleaned Vox1-O/E/H lists. The stages of WeSpeaker's
# examples/voxceleb/v2:
#   1. data: VoxCeleb2 dev .m4a decoded to flac; data dirs vox2_dev (training, cohort,
#      calibration) and vox1 (evaluation); Vox1-O/E/H trials in Kaldi format;
#      MUSAN and RIRS_NOISES dirs; QMF calibration trials drawn from vox2_dev;
#      a validation set: num_valid_speakers of vox2_dev held out of training
#      (vox2_valid, with its trials; vox2_train is vox2_dev without them)
#   2. shard (or raw) training lists; MUSAN and RIR lists
#   3. phase 1: the backend on the frozen SSL model (torchrun, one or many nodes),
#      validated on vox2_valid every epoch
#   4. average checkpoints (those of the best validation EERs); embeddings of vox1 and
#      vox2_dev
#   5. cosine scoring (vox2_dev mean subtracted); EER / minDCF on Vox1-O/E/H
#   6. AS-norm (top_n of the vox2_dev speakers' mean embeddings); EER / minDCF
#   7. QMF calibration fitted on the vox2_dev trials; EER / minDCF; results table
#   8. phase 2: joint fine-tuning from phase 1, then stages 4-7 on it
#   9. phase 3: large-margin fine-tuning from phase 2, then stages 4-7 on it
#  10. model package of the newest evaluated phase (<exp_dir>/package): the vox2_dev mean
#      and AS-norm cohort, thresholds measured on the calibration trials, stage 7's QMF
#      model; its card shows where those thresholds land on Vox1-O/E/H
#  11. ONNX export of the newest phase (WeSpeaker's stage 8; off by default)
#
#   bash run.sh --vox1_root /corpora/voxceleb1 --vox2_root /corpora/voxceleb2 \
#     --musan_root /corpora/musan --rirs_root /corpora/RIRS_NOISES
#   bash run.sh --stage 3 --config conf/lap_astp_wavlm_large.yaml  # another system
# Paths are relative to this directory; see README.md for downloads and multi-node runs.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

stage=1                  # first stage to run
stop_stage=10            # last stage to run
vox1_root=               # VoxCeleb1: wav/idXXXXX/<video>/NNNNN.wav (dev and test unzipped)
vox2_root=               # VoxCeleb2: dev/aac/idXXXXX/<video>/NNNNN.m4a
trials_dir=              # veri_test2.txt, list_test_all2.txt, list_test_hard2.txt; empty: vox1_root
musan_root=              # MUSAN (openslr 17): noise/ music/ speech/
rirs_root=               # RIRS_NOISES (openslr 28): simulated_rirs/
vox2_audio=              # where VoxCeleb2 dev is decoded; empty: <vox2_root>/dev/<audio_format>
audio_format=flac        # decoded VoxCeleb2: flac (lossless, about half of wav's size) or wav
nj=16                    # parallel jobs: decoding, audio headers, shards
data=data                # data dirs, lists, trials
exp=exp                  # experiments: <exp>/<config name>
data_type=shard          # training lists: shard (tar files) or raw
num_utts_per_shard=1000  # utterances per shard
config=conf/lap_astp_wavlm_base_plus.yaml  # phase-1 config (conf/ holds every backend)
phase2_config=           # empty: <config>_phase2.yaml
phase3_config=           # empty: <config>_phase3.yaml
ssl_model=               # SSL model dir or hub id replacing the configs'; empty: the configs'
train_opts=              # extra training overrides for every phase, e.g. "--num_epochs 20"
gpus="[0,1]"             # GPUs of each node, one process each; empty: one CPU process
num_nodes=1              # torchrun nodes; more than 1: the same command on every node
HOST_NODE_ADDR=localhost:29400  # c10d rendezvous endpoint host:port (multi-node)
evaluate=true            # false on all nodes but one: stages 4-7 and 8-9's evaluation skipped
top_n=300                # AS-norm and QMF cohort statistics: top cohort scores per side
num_cal_trials=30000     # QMF calibration trials drawn from vox2_dev
seed=777                 # shard order, calibration trials, validation speakers
num_valid_speakers=100   # vox2_dev speakers held out of training to validate on; 0: none
num_valid_trials=20000   # trials drawn among the validation utterances
ssl_revision=            # stage 10: the SSL hub model's revision to pin; empty: bundle the model

help_message="Usage: bash run.sh --vox1_root DIR --vox2_root DIR --musan_root DIR --rirs_root DIR \
[--stage N] [--stop_stage M] [--config conf/X.yaml] [--gpus \"[0,1]\"]"
# shellcheck source=tools/parse_options.sh
. "$(dirname "${BASH_SOURCE[0]}")/tools/parse_options.sh"  # before the cd: it reads $0
cd "$(dirname "${BASH_SOURCE[0]}")"
. ./path.sh
# shellcheck source=tools/stage_marker.sh
. tools/stage_marker.sh

log() { echo "$(date '+%F %T') (run.sh:${BASH_LINENO[0]}) $*"; }
die() { echo "run.sh: $*" >&2; exit 1; }

# Everything derived: one home for each value.
vox2_audio=${vox2_audio:-${vox2_root:+$vox2_root/dev/$audio_format}}
trials_dir=${trials_dir:-$vox1_root}
phase2_config=${phase2_config:-${config%.yaml}_phase2.yaml}
phase3_config=${phase3_config:-${config%.yaml}_phase3.yaml}
exp1=$exp/$(basename "$config" .yaml)  # one experiment per config
exp2=$exp/$(basename "$phase2_config" .yaml)
exp3=$exp/$(basename "$phase3_config" .yaml)
trials=()
for x in O E H; do trials+=("$data/vox1/trials/vox1_${x}_cleaned.kaldi"); done
cal_trials=$data/vox2_dev/trials/qmf_cal.kaldi
train_set=vox2_dev; valid_opts=(); select=last  # training set; validation; average_model
if [ "$num_valid_speakers" -gt 0 ]; then
  train_set=vox2_train
  valid_opts=(--valid_data "$data/vox2_valid" --valid_trials "$data/vox2_valid/trials.kaldi")
  select=best_valid
fi
valid_split_opts=("num_valid_speakers=$num_valid_speakers" "num_valid_trials=$num_valid_trials"
                  "seed=$seed" "audio_format=$audio_format")
read -r -a extra_opts <<< "$train_opts"
[ -n "$ssl_model" ] && extra_opts+=(--frontend_args.model_name_or_path "$ssl_model")

train() {  # config exp_dir [train.py overrides]
  local config=$1 exp_dir=$2
  shift 2
  tools/train.sh --config "$config" --exp_dir "$exp_dir" --gpus "$gpus" \
    --num_nodes "$num_nodes" --HOST_NODE_ADDR "$HOST_NODE_ADDR" -- \
    --data_type "$data_type" --train_data "$data/$train_set/$data_type.list" \
    --train_label "$data/$train_set/utt2spk" \
    --noise_data "$data/musan.list" --reverb_data "$data/rirs.list" \
    "${valid_opts[@]+"${valid_opts[@]}"}" "$@" "${extra_opts[@]+"${extra_opts[@]}"}"
}
extract() {  # exp_dir
  tools/extract_embeddings.sh --exp_dir "$1" --gpus "$gpus" --num_workers 4 --select "$select" \
    "$data/vox1" "$data/vox2_dev"
}
score() {  # exp_dir: cosine, vox2_dev mean subtracted
  tools/score.sh --exp_dir "$1" --eval_set vox1 --mean_set vox2_dev "${trials[@]}"
}
asnorm() {  # exp_dir: AS-norm of score()'s files
  tools/score_norm.sh --exp_dir "$1" --eval_set vox1 --mean_set vox2_dev --cohort_set vox2_dev \
    --cohort_utt2spk "$data/vox2_dev/utt2spk" --top_n "$top_n" \
    --json "$1/scores/metrics.json" "${trials[@]}"
}
calibrate() {  # exp_dir
  tools/calibrate.sh --exp_dir "$1" --cal_set vox2_dev --cal_data "$data/vox2_dev" \
    --cal_trials "$cal_trials" --eval_set vox1 --eval_data "$data/vox1" --mean_set vox2_dev \
    --cohort_set vox2_dev --cohort_utt2spk "$data/vox2_dev/utt2spk" --top_n "$top_n" \
    --json "$1/scores/metrics_qmf.json" "${trials[@]}"
  python local/results_table.py "$1" | tee "$1/results.md"
}
evaluate_exp() {  # exp_dir: stages 4-7
  extract "$1"
  score "$1"
  asnorm "$1"
  calibrate "$1"
}
fine_tune() {  # phase phase_config init_exp exp_dir: stages 8 and 9 (then 4-7 on it)
  local phase=$1 phase_config=$2 init=$3 exp_dir=$4
  [ -f "$phase_config" ] || die "no phase-$phase config $phase_config (give --phase${phase}_config)"
  [ -f "$init/config.yaml" ] || die "phase $phase starts from $init: train it first"
  tools/average_model.sh --exp_dir "$init" --select "$select"
  train "$phase_config" "$exp_dir" --model_init "$init/models/avg_model.pt"
  if $evaluate; then
    evaluate_exp "$exp_dir"
  fi
}
package() {  # exp_dir: its model package <exp_dir>/package (stage 10)
  local exp_dir=$1 scores=$1/scores emb=$1/embeddings weights out i
  local ssl_opts=(--bundle_ssl) test_args=() cosine normed
  weights=$(sha256sum < "$exp_dir/models/avg_model.pt"); weights=${weights%% *}
  local opts=("top_n=$top_n" "num_cal_trials=$num_cal_trials" "seed=$seed"
              "ssl_revision=$ssl_revision" "weights=$weights")
  stage_is_done "$exp_dir/.package.done" "${opts[@]}" && return 0
  # stage 6's AS-norm score files of Vox1-O/E/H, as python names them
  out=$(python -m wespeaker_lap.bin.score --print_paths --trials "${trials[@]}" \
    --output_dir "$scores")
  mapfile -t cosine <<< "$out"
  out=$(python -m wespeaker_lap.bin.score_norm --print_paths --scores "${cosine[@]}" \
    --top_n "$top_n" --output_dir "$scores")
  mapfile -t normed <<< "$out"
  for i in "${!trials[@]}"; do
    test_args+=(--test_scores "$(basename "${trials[$i]}" .kaldi)" "${normed[$i]}")
  done
  [ -n "$ssl_revision" ] && ssl_opts=(--ssl_revision "$ssl_revision")
  python -m wespeaker_lap.bin.package_model --exp_dir "$exp_dir" --out "$exp_dir/package" \
    --overwrite "${ssl_opts[@]}" --mean_vec "$emb/vox2_dev/mean_vec.npy" \
    --cohort_embeddings "$emb/vox2_dev/xvector.scp" --cohort_utt2spk "$data/vox2_dev/utt2spk" \
    --top_n "$top_n" --trials "$cal_trials" --trials_name vox2_dev_qmf_cal \
    --trial_embeddings "$emb/vox2_dev/xvector.scp" \
    --calibration "$scores/qmf.asnorm$top_n.json" --results "$exp_dir/results.md" \
    --name "wespeaker-lap $(basename "$exp_dir")" --datasets voxceleb2 "${test_args[@]}"
  stage_done_with "$exp_dir/.package.done" "${opts[@]}"
}
needs() {  # option: stage 1 cannot go on without it
  [ -n "${!1}" ] || die "stage 1 needs --$1 (see README.md)"
}
prep_done() {  # step [name=value ...]: stage 1's step done with these options (or by a
  # recipe that had one marker for the whole stage)
  local step=$1
  shift
  stage_is_done --legacy "$data/.prep.done" "$data/.prep.$step.done" "$@"
}

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log "Stage 1: data preparation into $data (VoxCeleb2 dev decoded into $vox2_audio)"
  # seven steps, each with its marker $data/.prep.<step>.done
  if [ ! -f "$data/.prep.done" ]; then  # the one marker of the stage before there were seven
    for step in decode vox2_dev vox1 validate trials cal_trials musan_rirs; do
      if [ ! -f "$data/.prep.$step.done" ]; then  # work left: every corpus is needed
        for v in vox1_root vox2_root musan_root rirs_root; do needs "$v"; done
        break
      fi
    done
  fi
  if ! prep_done decode "audio_format=$audio_format"; then
    needs vox2_root
    python local/prepare_voxceleb.py decode --format "$audio_format" --nj "$nj" \
      "$vox2_root/dev/aac" "$vox2_audio"
    stage_done_with "$data/.prep.decode.done" "audio_format=$audio_format"
  fi
  if ! prep_done vox2_dev "audio_format=$audio_format"; then
    [ -n "$vox2_audio" ] || needs vox2_root
    python local/prepare_voxceleb.py data --ext "$audio_format" --nj "$nj" \
      "$vox2_audio" "$data/vox2_dev"
    stage_done_with "$data/.prep.vox2_dev.done" "audio_format=$audio_format"
  fi
  if ! prep_done vox1; then
    needs vox1_root
    python local/prepare_voxceleb.py data --ext wav --nj "$nj" "$vox1_root/wav" "$data/vox1"
    stage_done_with "$data/.prep.vox1.done"
  fi
  if ! prep_done validate "audio_format=$audio_format"; then
    for x in vox2_dev vox1; do
      python -m wespeaker_lap.bin.validate_data_dir --nj "$nj" "$data/$x"
    done
    stage_done_with "$data/.prep.validate.done" "audio_format=$audio_format"
  fi
  if ! prep_done trials; then
    [ -n "$trials_dir" ] || needs vox1_root
    python local/prepare_voxceleb.py trials "$trials_dir" "$data/vox1"
    stage_done_with "$data/.prep.trials.done"
  fi
  if ! prep_done cal_trials "num_cal_trials=$num_cal_trials" "seed=$seed"; then
    python local/prepare_voxceleb.py cal_trials --num_trials "$num_cal_trials" --seed "$seed" \
      "$data/vox2_dev" "$cal_trials"
    stage_done_with "$data/.prep.cal_trials.done" "num_cal_trials=$num_cal_trials" "seed=$seed"
  fi
  if ! prep_done musan_rirs; then
    needs musan_root
    needs rirs_root
    python local/prepare_musan_rirs.py --musan_root "$musan_root" --rirs_root "$rirs_root" \
      --data "$data"
    stage_done_with "$data/.prep.musan_rirs.done"
  fi
  if [ "$num_valid_speakers" -gt 0 ] && ! stage_is_done "$data/.prep.valid.done" \
      "${valid_split_opts[@]}"; then
    python local/prepare_voxceleb.py valid --num_speakers "$num_valid_speakers" \
      --num_trials "$num_valid_trials" --seed "$seed" \
      "$data/vox2_dev" "$data/vox2_train" "$data/vox2_valid"  # validates both dirs
    stage_done_with "$data/.prep.valid.done" "${valid_split_opts[@]}"
  fi
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  log "Stage 2: $data_type list of $train_set; MUSAN and RIR lists"
  # one marker a list type and training set (both kinds can be kept; vox2_dev's is the
  # marker of the recipe before validation); the MUSAN and RIR lists have theirs
  list_marker=$data/.lists_$data_type.done
  list_opts=("audio_format=$audio_format")  # the paths in wav.scp
  if [ "$train_set" = vox2_train ]; then
    list_marker=$data/.lists_${data_type}_vox2_train.done
    list_opts+=("num_valid_speakers=$num_valid_speakers" "split_seed=$seed")  # its speakers
  fi
  [ "$data_type" = shard ] && list_opts+=("num_utts_per_shard=$num_utts_per_shard" "seed=$seed")
  if ! stage_is_done "$list_marker" "${list_opts[@]}"; then
    case $data_type in
      raw) python -m wespeaker_lap.bin.make_raw_list "$data/$train_set" \
             "$data/$train_set/raw.list" ;;
      shard) python -m wespeaker_lap.bin.make_shard_list --num_utts_per_shard \
               "$num_utts_per_shard" --nj "$nj" --seed "$seed" \
               "$data/$train_set" "$data/$train_set/shards" "$data/$train_set/shard.list" ;;
      *) die "--data_type must be raw or shard, got $data_type" ;;
    esac
    stage_done_with "$list_marker" "${list_opts[@]}"
  fi
  # before they had a marker of their own, the list type's marker covered them
  if ! stage_is_done --legacy "$data/.lists_$data_type.done" "$data/.lists_aug.done"; then
    python -m wespeaker_lap.bin.make_raw_list --type auto "$data/musan" "$data/musan.list"
    python -m wespeaker_lap.bin.make_raw_list --type rir "$data/rirs" "$data/rirs.list"
    stage_done_with "$data/.lists_aug.done"
  fi
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  log "Stage 3: phase 1, $(basename "$config" .yaml) into $exp1"
  train "$config" "$exp1"
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ] && $evaluate; then
  log "Stage 4: average checkpoints; embeddings of vox1 and vox2_dev"
  extract "$exp1"
fi

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ] && $evaluate; then
  log "Stage 5: cosine scoring of Vox1-O/E/H (vox2_dev mean subtracted)"
  score "$exp1"
fi

if [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ] && $evaluate; then
  log "Stage 6: AS-norm (top $top_n of the vox2_dev speakers)"
  asnorm "$exp1"
fi

if [ "$stage" -le 7 ] && [ "$stop_stage" -ge 7 ] && $evaluate; then
  log "Stage 7: QMF calibration fitted on $num_cal_trials vox2_dev trials"
  calibrate "$exp1"
fi

if [ "$stage" -le 8 ] && [ "$stop_stage" -ge 8 ]; then
  log "Stage 8: phase 2 (joint fine-tuning) of $exp1 into $exp2; stages 4-7 on it"
  fine_tune 2 "$phase2_config" "$exp1" "$exp2"
fi

if [ "$stage" -le 9 ] && [ "$stop_stage" -ge 9 ]; then
  log "Stage 9: phase 3 (large-margin fine-tuning) of $exp2 into $exp3; stages 4-7 on it"
  fine_tune 3 "$phase3_config" "$exp2" "$exp3"
fi

if [ "$stage" -le 10 ] && [ "$stop_stage" -ge 10 ] && $evaluate; then
  # the newest phase that was evaluated (stage 7's QMF model is the package's calibration)
  for package_exp in "$exp3" "$exp2" "$exp1"; do
    [ -f "$package_exp/scores/qmf.asnorm$top_n.json" ] && break
  done
  [ -f "$package_exp/scores/qmf.asnorm$top_n.json" ] || \
    die "stage 10 packages an evaluated system (stages 4-7, top_n $top_n): run them first"
  log "Stage 10: model package $package_exp/package (thresholds on the calibration trials)"
  package "$package_exp"
fi

if [ "$stage" -le 11 ] && [ "$stop_stage" -ge 11 ]; then
  # WeSpeaker's export stage; off by default (--stage 11 --stop_stage 11). The newest phase
  # that was trained is exported; needs the export extra (onnx, onnxruntime).
  for export_exp in "$exp3" "$exp2" "$exp1"; do
    [ -f "$export_exp/config.yaml" ] && break
  done
  [ -f "$export_exp/config.yaml" ] || die "stage 11 exports a trained system: train one first"
  log "Stage 11: export ONNX (waveform -> embedding) of $export_exp"
  tools/average_model.sh --exp_dir "$export_exp" --select "$select"
  python -m wespeaker_lap.bin.export_onnx --model_dir "$export_exp" \
    --out "$export_exp/extractor.onnx"
fi
log "done"
