#!/usr/bin/env bash
# VCTK recipe: the UniPool paper's VCTK 0.92 protocol (Kim et al., 2024) with the recipes'
# training, extraction and scoring stages:
#   1. data: drop p280, p315 and utterances 000-024; mic1 resampled 48 -> 16 kHz;
#      speakers split 60/20/20 (train/val/test) stratified on gender, accent, age bin
#      and utterance count; val and test trials (targets even over speakers, non-targets
#      even over the gender x accent cells); MUSAN / RIRS_NOISES dirs when given
#   2. raw (or shard) training list; MUSAN and RIR lists
#   3. train the backend on the frozen SSL model (torchrun, one or many nodes), validated
#      every epoch on (at most 2,000 utterances of) the protocol's val speakers
#   4. average the checkpoints of the best validation EERs; embeddings of train, val and test
#   5. cosine scoring of the test trials (train mean subtracted); EER / minDCF
#   6. AS-norm (top_n of the train speakers' mean embeddings); EER / minDCF
#   7. QMF calibration fitted on the val trials, applied to test; results table
#   8. model package <exp_dir>/package: train mean and AS-norm cohort, thresholds measured
#      on the val trials, stage 7's QMF model; its card shows where they land on test
#
#   bash run.sh --vctk_root /corpora/VCTK-Corpus-0.92 [--musan_root ... --rirs_root ...]
#   bash run.sh --stage 3 --config conf/unipool_wavlm_base_plus.yaml  # another backend
# Paths are relative to this directory; see README.md.
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

stage=1                  # first stage to run
stop_stage=8             # last stage to run
vctk_root=               # VCTK 0.92: speaker-info.txt, wav48_silence_trimmed/pXXX/*.flac
musan_root=              # MUSAN (openslr 17) for additive noise; empty: none
rirs_root=               # RIRS_NOISES (openslr 28) for reverberation; empty: none
audio_dir=               # 16 kHz flac files; empty: <data>/vctk_16k
split=0.6,0.2,0.2        # train,val,test speaker fractions
num_target=8000          # target trials per val/test list
num_nontarget=8000       # non-target trials per val/test list
nj=8                     # parallel jobs: resampling, audio headers, shards
data=data                # data dirs, lists, trials
exp=exp                  # experiments: <exp>/<config name>
data_type=raw            # training list: raw or shard
config=conf/lap_astp_wavlm_base_plus.yaml  # training config (conf/ holds every backend)
ssl_model=               # SSL model dir or hub id replacing the config's; empty: the config's
train_opts=              # extra training overrides, e.g. "--num_epochs 20"
gpus="[0]"               # GPUs of each node, one process each; empty: one CPU process
num_nodes=1              # torchrun nodes; more than 1: the same command on every node
HOST_NODE_ADDR=localhost:29400  # c10d rendezvous endpoint host:port (multi-node)
top_n=50                 # AS-norm and QMF cohort statistics: top of the ~65 train speakers
seed=777                 # speaker split, trials, shard order
ssl_revision=            # stage 8: the SSL hub model's revision to pin; empty: bundle the model

help_message="Usage: bash run.sh --vctk_root DIR [--stage N] [--stop_stage M] [--config conf/X.yaml]"
# shellcheck source=tools/parse_options.sh
. "$(dirname "${BASH_SOURCE[0]}")/tools/parse_options.sh"  # before the cd: it reads $0
cd "$(dirname "${BASH_SOURCE[0]}")"
. ./path.sh
# shellcheck source=tools/stage_marker.sh
. tools/stage_marker.sh

log() { echo "$(date '+%F %T') (run.sh:${BASH_LINENO[0]}) $*"; }
die() { echo "run.sh: $*" >&2; exit 1; }

# Everything derived: one home for each value.
audio_dir=${audio_dir:-$data/vctk_16k}
exp_dir=$exp/$(basename "$config" .yaml)  # one experiment per config
test_trials=$data/trials/vctk_test.kaldi
val_trials=$data/trials/vctk_val.kaldi
read -r -a extra_opts <<< "$train_opts"
[ -n "$ssl_model" ] && extra_opts+=(--frontend_args.model_name_or_path "$ssl_model")
aug_opts=()
noise_opts=()
if [ -n "$musan_root" ]; then
  aug_opts+=(--noise_data "$data/musan.list"); noise_opts+=(--musan_root "$musan_root")
else
  aug_opts+=(--noise_data null)
fi
if [ -n "$rirs_root" ]; then
  aug_opts+=(--reverb_data "$data/rirs.list"); noise_opts+=(--rirs_root "$rirs_root")
else
  aug_opts+=(--reverb_data null)
fi
if [ -z "$musan_root" ] && [ -z "$rirs_root" ]; then
  aug_opts+=(--dataset_args.aug_prob 0.0)  # nothing to augment with
fi
# what the markers record (corpus paths are not recorded: a moved corpus is not redone)
protocol_opts=("split=$split" "num_target=$num_target" "num_nontarget=$num_nontarget"
               "seed=$seed")
noise_marker_opts=("musan=${musan_root:+given}" "rirs=${rirs_root:+given}")
prep_done() {  # step [name=value ...]: stage 1's step done with these options (or by a
  # recipe that had one marker for the whole stage)
  local step=$1
  shift
  stage_is_done --legacy "$data/.prep.done" "$data/.prep.$step.done" "$@"
}

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log "Stage 1: VCTK protocol into $data (16 kHz audio in $audio_dir)"
  # three steps, each with its marker $data/.prep.<step>.done
  if ! prep_done protocol "${protocol_opts[@]}"; then
    [ -n "$vctk_root" ] || die "stage 1 needs --vctk_root (see README.md)"
    python local/prepare_vctk.py --vctk_root "$vctk_root" --audio_dir "$audio_dir" \
      --data "$data" --split "$split" --num_target "$num_target" \
      --num_nontarget "$num_nontarget" --seed "$seed" --nj "$nj"
    stage_done_with "$data/.prep.protocol.done" "${protocol_opts[@]}"
  fi
  if ! prep_done validate "${protocol_opts[@]}"; then
    for x in train val test; do
      python -m wespeaker_lap.bin.validate_data_dir --nj "$nj" "$data/$x"
    done
    stage_done_with "$data/.prep.validate.done" "${protocol_opts[@]}"
  fi
  if ! prep_done musan_rirs "${noise_marker_opts[@]}"; then
    if [ ${#noise_opts[@]} -gt 0 ]; then
      python local/prepare_musan_rirs.py "${noise_opts[@]}" --data "$data"
    fi
    stage_done_with "$data/.prep.musan_rirs.done" "${noise_marker_opts[@]}"
  fi
fi

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  log "Stage 2: $data_type list of train; MUSAN and RIR lists"
  # one marker a list type (both kinds can be kept); the MUSAN and RIR lists have theirs
  list_opts=("split=$split" "seed=$seed")  # the speakers of train; the shards' order
  if ! stage_is_done "$data/.lists_$data_type.done" "${list_opts[@]}"; then
    case $data_type in
      raw) python -m wespeaker_lap.bin.make_raw_list "$data/train" "$data/train/raw.list" ;;
      shard) python -m wespeaker_lap.bin.make_shard_list --num_utts_per_shard 1000 --nj "$nj" \
               --seed "$seed" "$data/train" "$data/train/shards" "$data/train/shard.list" ;;
      *) die "--data_type must be raw or shard, got $data_type" ;;
    esac
    stage_done_with "$data/.lists_$data_type.done" "${list_opts[@]}"
  fi
  # before they had a marker of their own, the list type's marker covered them
  if ! stage_is_done --legacy "$data/.lists_$data_type.done" "$data/.lists_aug.done" \
      "${noise_marker_opts[@]}"; then
    if [ -n "$musan_root" ]; then
      python -m wespeaker_lap.bin.make_raw_list --type auto "$data/musan" "$data/musan.list"
    fi
    if [ -n "$rirs_root" ]; then
      python -m wespeaker_lap.bin.make_raw_list --type rir "$data/rirs" "$data/rirs.list"
    fi
    stage_done_with "$data/.lists_aug.done" "${noise_marker_opts[@]}"
  fi
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  log "Stage 3: train $(basename "$config" .yaml) into $exp_dir"
  tools/train.sh --config "$config" --exp_dir "$exp_dir" --gpus "$gpus" \
    --num_nodes "$num_nodes" --HOST_NODE_ADDR "$HOST_NODE_ADDR" -- \
    --data_type "$data_type" --train_data "$data/train/$data_type.list" \
    --train_label "$data/train/utt2spk" "${aug_opts[@]}" \
    --valid_data "$data/val" --valid_trials "$val_trials" --valid_args.max_utts 2000 \
    "${extra_opts[@]+"${extra_opts[@]}"}"
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  log "Stage 4: average checkpoints (best_valid); embeddings of train, val and test"
  tools/extract_embeddings.sh --exp_dir "$exp_dir" --gpus "$gpus" --select best_valid \
    "$data/train" "$data/val" "$data/test"
fi

if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  log "Stage 5: cosine scoring of the test trials (train mean subtracted)"
  tools/score.sh --exp_dir "$exp_dir" --eval_set test --mean_set train "$test_trials"
fi

if [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
  log "Stage 6: AS-norm (top $top_n of the train speakers)"
  tools/score_norm.sh --exp_dir "$exp_dir" --eval_set test --mean_set train --cohort_set train \
    --cohort_utt2spk "$data/train/utt2spk" --top_n "$top_n" \
    --json "$exp_dir/scores/metrics.json" "$test_trials"
fi

if [ "$stage" -le 7 ] && [ "$stop_stage" -ge 7 ]; then
  log "Stage 7: QMF calibration fitted on the val trials"
  tools/calibrate.sh --exp_dir "$exp_dir" --cal_set val --cal_data "$data/val" \
    --cal_trials "$val_trials" --eval_set test --eval_data "$data/test" --mean_set train \
    --cohort_set train --cohort_utt2spk "$data/train/utt2spk" --top_n "$top_n" \
    --json "$exp_dir/scores/metrics_qmf.json" "$test_trials"
  python local/results_table.py "$exp_dir" | tee "$exp_dir/results.md"
fi

if [ "$stage" -le 8 ] && [ "$stop_stage" -ge 8 ]; then
  log "Stage 8: model package $exp_dir/package (thresholds on the val trials)"
  qmf=$exp_dir/scores/qmf.asnorm$top_n.json
  [ -f "$qmf" ] || die "stage 8 packages stage 7's calibration $qmf: run stages 4-7 first"
  weights=$(sha256sum < "$exp_dir/models/avg_model.pt"); weights=${weights%% *}
  package_opts=("top_n=$top_n" "ssl_revision=$ssl_revision" "weights=$weights")
  if ! stage_is_done "$exp_dir/.package.done" "${package_opts[@]}"; then
    # stage 6's AS-norm score file of the test trials, as python names it
    cosine=$(python -m wespeaker_lap.bin.score --print_paths --trials "$test_trials" \
      --output_dir "$exp_dir/scores")
    normed=$(python -m wespeaker_lap.bin.score_norm --print_paths --scores "$cosine" \
      --top_n "$top_n" --output_dir "$exp_dir/scores")
    ssl_opts=(--bundle_ssl)
    [ -n "$ssl_revision" ] && ssl_opts=(--ssl_revision "$ssl_revision")
    emb=$exp_dir/embeddings
    python -m wespeaker_lap.bin.package_model --exp_dir "$exp_dir" --out "$exp_dir/package" \
      --overwrite "${ssl_opts[@]}" --mean_vec "$emb/train/mean_vec.npy" \
      --cohort_embeddings "$emb/train/xvector.scp" --cohort_utt2spk "$data/train/utt2spk" \
      --top_n "$top_n" --trials "$val_trials" --trials_name vctk_val \
      --trial_embeddings "$emb/val/xvector.scp" --calibration "$qmf" \
      --results "$exp_dir/results.md" --name "wespeaker-lap $(basename "$exp_dir") (VCTK)" \
      --datasets vctk --test_scores vctk_test "$normed"
    stage_done_with "$exp_dir/.package.done" "${package_opts[@]}"
  fi
fi
log "done"
