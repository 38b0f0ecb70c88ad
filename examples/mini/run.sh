#!/usr/bin/env bash
# Mini recipe: the whole pipeline on a corpus synthesized here with Debian TTS
# voices, sized for a laptop CPU. The stages are those of the big recipes:
#   1. synthesize the corpus (train, in-domain test, unseen-voice test and unlabeled
#      pool speakers; trials, noise, RIRs); validate
#   2. raw (or shard) lists, noise/RIR lists; pre-train the SSL model (HuBERT-style
#      masked unit prediction on the unlabeled pool plus the training audio)
#   3. train the backend on the frozen SSL model (torchrun), validated on data/valid
#      (held-out speakers of the training voices) every epoch
#   4. average the checkpoints of the best validation EERs; extract test, unseen-voice
#      test, train (cohort) and valid embeddings
#   5. cosine scoring with mean subtraction; EER / minDCF
#   6. AS-norm of stage 5's scores; EER / minDCF; DET and layer-attention plots;
#      training curves and layer use per epoch; results table with speaker-bootstrap
#      95% intervals; per-stage time table
#   7. the model package exp/lap_astp/package (python -m wespeaker_lap.bin.package_model):
#      train mean and AS-norm cohort, thresholds and QMF calibration on the valid trials,
#      the SSL model bundled; its card shows stage 6's intervals and the thresholds' test errors
#   8. (off by default) ONNX export of the whole extractor
#
#   bash run.sh                                   # stages 1-7, LAP_ASTP
#   bash run.sh --quick                           # small sizes (CI's integration test)
#   bash run.sh --scale 2                         # 2x the training speakers and pre-training steps
#   bash run.sh --stage 3 --config conf/mhfa.yaml # another backend, same data and SSL
#   bash run.sh --ssl_model microsoft/wavlm-base-plus   # a real SSL model instead
# shellcheck source-path=SCRIPTDIR
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
. ./path.sh

stage=1                       # first stage to run
stop_stage=7                  # last stage to run
quick=false                   # small corpus, short pre-training and training (about 3 min)
seed=7                        # corpus seed
nj=2                          # parallel jobs for synthesis
data_type=raw                 # training lists: raw or shard
config=conf/lap_astp.yaml     # training config (WeSpeaker grammar)
ssl_model=                    # SSL checkpoint dir or hub id; empty: pre-train one in stage 2
ssl_config=../../conf/ssl_hubert_mini.yaml  # the pre-trained model's size and objective
pretrain_minutes=             # also stop stage 2's pre-training after this wall time; empty: none
gpus=                         # e.g. "[0,1]": one process per GPU; empty: one CPU process
num_nodes=1                   # torchrun nodes (more than 1: give HOST_NODE_ADDR)
HOST_NODE_ADDR=localhost:29400  # c10d rendezvous endpoint for multi-node runs
top_n=100                     # AS-norm: top cohort scores per side
workdir=.                     # where corpus*/ and exp*/ are written
suffix=                       # appended to the experiment name, e.g. _random_ssl
train_seed=                   # (integer) backend training seed; empty: the config's
precision=auto                # float32 | bfloat16 | auto: pre-training, training and the
                              # frozen forward; auto: bfloat16 where a start-up probe finds it
                              # faster (CPUs with AVX-512 BF16 or AMX). It sets the sizes:
                              # bfloat16 600 training speakers, 4,400 pre-training steps
                              # and 10 backend epochs (3 of them cached), float32 300,
                              # 1,900 and 5 epochs (both about 15 minutes)
scale=1                       # compute multiplier N (1, 2, 4, ...): N x the training speakers
                              # and N x the pre-training steps (so N x the backend's steps, at
                              # the same epochs); written to corpus_xN/ and exp_xN/

help_message="Usage: bash run.sh [--stage N] [--stop_stage M] [--quick] [--config conf/X.yaml]"
. tools/parse_options.sh
# shellcheck source=tools/stage_marker.sh
. tools/stage_marker.sh

log() { echo "$(date '+%F %T') (run.sh:${BASH_LINENO[0]}) $*"; }
# per-stage wall times, printed as a table at the end
stage_names=(); stage_secs=(); t_stage=$SECONDS
stage_done() { stage_names+=("$1"); stage_secs+=($((SECONDS - t_stage))); t_stage=$SECONDS; }

# Everything derived: one home for each value.
if [ "$scale" -lt 1 ]; then
  echo "$0: option --scale takes an integer of at least 1, got '$scale'" >&2; exit 1
fi
tag=; $quick && tag=_quick
[ "$scale" -ne 1 ] && tag+=_x$scale
corpus=$workdir/corpus$tag                # synthesized audio + data dirs
data=$corpus/data
exp=$workdir/exp$tag
exp_dir=$exp/$(basename "$config" .yaml)$suffix  # one experiment per config (+ suffix)
ssl_dir=${ssl_model:-$exp/ssl}            # the SSL model the backends pool over
if [ "$precision" = auto ]; then  # one probe for the whole run: every stage agrees
  precision=$(python -m wespeaker_lap.bin.probe_precision)
fi
case $precision in
  bfloat16) amp=true ;;
  float32) amp=false ;;
  *) echo "$0: option --precision takes float32, bfloat16 or auto, got '$precision'" >&2
     exit 1 ;;
esac
# phase-1 configs carry the bfloat16 sizes (10 epochs, the margin over epochs 3-6); a
# phase-2 config (model_init) keeps its own
phase1=true; grep -q '^model_init:' "$config" 2>/dev/null && phase1=false
if $quick; then
  synth_opts=(--quick)
  pretrain_opts=(--steps 250)
  # 6 utterances a speaker (the default corpus has 12): 10 epochs, the margin over 5-8
  train_opts=(--log_batch_interval 5 --num_epochs 10 --margin_update.increase_start_epoch 5
              --margin_update.fix_start_epoch 8 --feature_cache_epochs 0)
elif [ "$precision" = float32 ]; then  # what float32 fits in about the same time: the
  synth_opts=(--num_train_spk 300)     # earlier default's 300 speakers, 1,900 steps,
  pretrain_opts=(--steps 1900)         # 5 epochs without the feature cache
  train_opts=(--feature_cache_epochs 0)
  $phase1 && train_opts+=(--num_epochs 5 --margin_update.increase_start_epoch 2
                          --margin_update.fix_start_epoch 4)
else
  synth_opts=()
  pretrain_opts=()
  train_opts=()
fi
pretrain_opts+=(--dtype "$precision")
if [ "$scale" -ne 1 ]; then  # the base sizes above, multiplied where they live
  synth_opts+=(--train_scale "$scale")
  pretrain_opts+=(--steps_scale "$scale")
fi
train_opts+=(--enable_amp "$amp" --frontend_args.dtype "$precision")
[ -n "$pretrain_minutes" ] && pretrain_opts+=(--max_minutes "$pretrain_minutes")
[ -n "$train_seed" ] && train_opts+=(--seed "$train_seed")
# what the markers record: the options that shape the corpus and the pre-trained model
corpus_opts=("seed=$seed" "quick=$quick" "synth=${synth_opts[*]}")
ssl_opts=("${corpus_opts[@]}" "ssl_config=$ssl_config" "pretrain_minutes=$pretrain_minutes"
          "precision=$precision")
test_sets=(test)  # plus test_unseen when the corpus has the held-out voices

if [ "$stage" -le 1 ] && [ "$stop_stage" -ge 1 ]; then
  log "Stage 1: synthesize the corpus into $corpus"
  # two steps, each with its marker (recipes before them wrote one: $corpus/.done)
  if ! stage_is_done "$corpus/.done" "${corpus_opts[@]}"; then
    rm -rf "$corpus"
    local/make_corpus.sh "$corpus" --seed "$seed" --nj "$nj" "${synth_opts[@]}"
    stage_done_with "$corpus/.done" "${corpus_opts[@]}"
  fi
  if ! stage_is_done --legacy "$corpus/.done" "$corpus/.validate.done" "${corpus_opts[@]}"; then
    for x in train test test_unseen; do
      [ -d "$data/$x" ] && python -m wespeaker_lap.bin.validate_data_dir "$data/$x"
    done
    stage_done_with "$corpus/.validate.done" "${corpus_opts[@]}"
  fi
  stage_done "1 corpus"
fi
[ -f "$data/test_unseen/trials.kaldi" ] && test_sets+=(test_unseen)

if [ "$stage" -le 2 ] && [ "$stop_stage" -ge 2 ]; then
  log "Stage 2: $data_type lists, noise/RIR lists; SSL model: $ssl_dir"
  if ! stage_is_done "$data/.lists.done" "${corpus_opts[@]}"; then  # seed: the shards' order
    for x in train "${test_sets[@]}"; do
      python -m wespeaker_lap.bin.make_raw_list "$data/$x" "$data/$x/raw.list"
    done
    python -m wespeaker_lap.bin.make_shard_list --num-utts-per-shard 200 --nj "$nj" \
      --seed "$seed" "$data/train" "$data/train/shards" "$data/train/shard.list"
    python -m wespeaker_lap.bin.make_raw_list --type auto "$data/noise" "$data/noise.list"
    python -m wespeaker_lap.bin.make_raw_list --type rir "$data/rirs" "$data/rirs.list"
    stage_done_with "$data/.lists.done" "${corpus_opts[@]}"
  fi
  if [ -z "$ssl_model" ] && ! stage_is_done "$ssl_dir/.done" "${ssl_opts[@]}"; then
    # unlabeled audio only (wav.scp files): the pool and the training audio, no utt2spk
    pool=("$data/train/wav.scp")
    [ -f "$data/pool/wav.scp" ] && pool+=("$data/pool/wav.scp")
    python -m wespeaker_lap.bin.pretrain_ssl --config "$ssl_config" \
      --wav_scp "${pool[@]}" --out "$ssl_dir" --seed "$seed" "${pretrain_opts[@]}"
    stage_done_with "$ssl_dir/.done" "${ssl_opts[@]}"
  fi
  stage_done "2 lists + SSL pre-training"
fi

# validation during training, and checkpoints chosen by it, when the corpus has data/valid
valid_opts=(); select=last
if [ -f "$data/valid/trials.kaldi" ]; then
  valid_opts=(--valid_data "$data/valid" --valid_trials "$data/valid/trials.kaldi")
  select=best_valid
fi

if [ "$stage" -le 3 ] && [ "$stop_stage" -ge 3 ]; then
  log "Stage 3: train $(basename "$config" .yaml) into $exp_dir"
  tools/train.sh --config "$config" --exp_dir "$exp_dir" --gpus "$gpus" \
    --num_nodes "$num_nodes" --HOST_NODE_ADDR "$HOST_NODE_ADDR" -- \
    --data_type "$data_type" --train_data "$data/train/$data_type.list" \
    --train_label "$data/train/utt2spk" \
    --noise_data "$data/noise.list" --reverb_data "$data/rirs.list" \
    --frontend_args.model_name_or_path "$ssl_dir" "${valid_opts[@]}" "${train_opts[@]}"
  stage_done "3 backend training"
fi

if [ "$stage" -le 4 ] && [ "$stop_stage" -ge 4 ]; then
  log "Stage 4: average checkpoints ($select); extract embeddings"
  eval_dirs=(); for x in "${test_sets[@]}"; do eval_dirs+=("$data/$x"); done
  [ -f "$data/valid/trials.kaldi" ] && eval_dirs+=("$data/valid")  # stage 7's thresholds
  # the test and valid sets in float32 whatever the training precision: the package
  # (stage 7) embeds in float32 too, and its scores must be the recipe's (bf16 embedding
  # moved the EERs by at most 0.02 points, examples/mini/README.md)
  tools/extract_embeddings.sh --exp_dir "$exp_dir" --gpus "$gpus" --layer_scores true \
    --select "$select" --dtype float32 "${eval_dirs[@]}"
  # the training set (the mean and the AS-norm cohort) in the training precision: the
  # package holds these embeddings as they are, so its scores stay the recipe's; the first
  # 4 utterances of each speaker (a third of the time: the same EER within 0.1 points
  # against all 12, examples/mini/README.md)
  tools/extract_embeddings.sh --exp_dir "$exp_dir" --gpus "$gpus" --layer_scores true \
    --select "$select" --dtype "$precision" --utts_per_spk 4 "$data/train"
  stage_done "4 embeddings"
fi

scores=$exp_dir/scores
trials=trials.kaldi
if [ "$stage" -le 5 ] && [ "$stop_stage" -ge 5 ]; then
  log "Stage 5: cosine scoring (training mean subtracted)"
  tools/score.sh --exp_dir "$exp_dir" --eval_set test --mean_set train "$data/test/$trials"
  if [[ " ${test_sets[*]} " == *" test_unseen "* ]]; then
    tools/score.sh --exp_dir "$exp_dir" --eval_set test_unseen --mean_set train \
      --scores_dir "$scores/test_unseen" "$data/test_unseen/$trials"
  fi
  stage_done "5 cosine scoring"
fi

# AS-norm's cohort is the training speakers (their mean embeddings): a top_n beyond their
# number would be S-norm (python refuses it), so it is cut to the cohort, with a log line
# (the --quick corpus has 40 training speakers)
if [ "$stop_stage" -ge 6 ] && [ -f "$data/train/spk2utt" ]; then
  cohort_size=$(wc -l < "$data/train/spk2utt")
  if [ "$top_n" -gt "$cohort_size" ]; then
    log "AS-norm: top_n $top_n is more than the $cohort_size training speakers; top $cohort_size"
    top_n=$cohort_size
  fi
fi

if [ "$stage" -le 6 ] && [ "$stop_stage" -ge 6 ]; then
  log "Stage 6: AS-norm of stage 5's scores (top $top_n of the train speakers' means); plots; results"
  # the score files of every set, cosine (stage 5) and AS-norm, as python names them
  ci_args=()
  breakdown_args=()
  for x in "${test_sets[@]}"; do
    d=$scores; [ "$x" = test ] || d=$scores/$x
    extra=(); [ "$x" = test ] && extra=(--det_png "$scores/det.png")
    normed=$(tools/score_norm.sh --exp_dir "$exp_dir" --eval_set "$x" --mean_set train \
      --cohort_set train --cohort_utt2spk "$exp_dir/embeddings/train/utt2spk" --top_n "$top_n" \
      --scores_dir "$d" --json "$d/metrics.json" "${extra[@]}" "$data/$x/$trials")
    cosine=$(python -m wespeaker_lap.bin.score --print_paths --trials "$data/$x/$trials" \
      --output_dir "$d")
    for f in $cosine $normed; do
      ci_args+=(--set "$x" "$data/$x/utt2spk" "$f")
    done
    breakdown_args+=(--set "$x" "$data/$x" "$normed")
  done
  superb=$exp/superb_astp/embeddings/test/layer_scores.npy  # beside it when that exp exists
  compare=()
  if [ -f "$superb" ] && [ "$exp_dir" != "$exp/superb_astp" ]; then
    compare=(--superb_weights "$superb")
  fi
  python -m wespeaker_lap.bin.plot_layers \
    --lap_scores "$exp_dir/embeddings/test/layer_scores.npy" "${compare[@]}" \
    --title "$(basename "$exp_dir"): layer attention on the test set" \
    --out "$exp_dir/layer_attention.png"
  # training curves (training.png) and layer use per validated epoch (layer_use.png)
  python -m wespeaker_lap.bin.plot_training "$exp_dir"
  python local/results_table.py --exp_dir "$exp_dir" --top_n "$top_n" | tee "$exp_dir/results.md"
  # EER with speaker-bootstrap 95% intervals and minDCF, both test sets
  python local/score_ci.py --json "$scores/metrics_ci.json" "${ci_args[@]}" \
    | tee "$exp_dir/results_ci.md"
  # AS-norm EER on subsets: same / other source voice, clean / degraded sides, per voice
  if [ -f "$corpus/speakers.tsv" ]; then
    python local/trial_breakdown.py --speakers "$corpus/speakers.tsv" "${breakdown_args[@]}" \
      > "$exp_dir/results_breakdown.md"
  fi
  stage_done "6 AS-norm, plots, intervals"
fi

package=$exp_dir/package
if [ "$stage" -le 7 ] && [ "$stop_stage" -ge 7 ]; then
  log "Stage 7: model package $package (thresholds and calibration on the valid trials)"
  if [ ! -f "$data/valid/$trials" ]; then
    echo "run.sh: stage 7 needs the valid set $data/valid (a corpus from before it existed:" \
      "delete $corpus and rerun from stage 1)" >&2
    exit 1
  fi
  # the package is rebuilt when the model (its averaged weights), the embeddings it holds
  # (the training set's: mean and cohort; the valid set's: thresholds), its card's results
  # or the options change
  digest() { local d; d=$(cat "$@" | sha256sum); echo "${d%% *}"; }
  emb=$exp_dir/embeddings
  package_opts=("top_n=$top_n" "weights=$(digest "$exp_dir/models/avg_model.pt")"
                "embeddings=$(digest "$emb/train/xvector.ark" "$emb/valid/xvector.ark")"
                "results=$(digest "$exp_dir/results_ci.md")")
  if ! stage_is_done "$exp_dir/.package.done" "${package_opts[@]}"; then
    # each test set's AS-norm score file (stage 6's), as python names them
    test_args=()
    for x in "${test_sets[@]}"; do
      d=$scores; [ "$x" = test ] || d=$scores/$x
      cosine=$(python -m wespeaker_lap.bin.score --print_paths --trials "$data/$x/$trials" \
        --output_dir "$d")
      normed=$(python -m wespeaker_lap.bin.score_norm --print_paths --scores "$cosine" \
        --top_n "$top_n" --output_dir "$d")
      test_args+=(--test_scores "$x" "$normed")
    done
    python -m wespeaker_lap.bin.package_model --exp_dir "$exp_dir" --out "$package" \
      --overwrite --bundle_ssl --mean_vec "$emb/train/mean_vec.npy" \
      --cohort_embeddings "$emb/train/xvector.scp" --cohort_utt2spk "$emb/train/utt2spk" \
      --top_n "$top_n" --trials "$data/valid/$trials" --trials_name valid \
      --trial_embeddings "$emb/valid/xvector.scp" --trial_utt2dur "$data/valid/utt2dur" \
      --calibrate --name "wespeaker-lap mini $(basename "$exp_dir")" \
      --results "$exp_dir/results_ci.md" "${test_args[@]}"
    stage_done_with "$exp_dir/.package.done" "${package_opts[@]}"
  fi
  stage_done "7 package"
fi

if [ "$stage" -le 8 ] && [ "$stop_stage" -ge 8 ]; then
  # off by default (bash run.sh --stage 8 --stop_stage 8); needs the export extra (onnx,
  # onnxruntime). The export checks onnxruntime against PyTorch before writing the file.
  log "Stage 8: export ONNX (waveform -> embedding) to $exp_dir/extractor.onnx"
  python -m wespeaker_lap.bin.export_onnx --model_dir "$exp_dir" --out "$exp_dir/extractor.onnx"
  read -r _ wav1 < "$data/test/wav.scp"
  python -m wespeaker_lap.cli.main similarity --onnx "$exp_dir/extractor.onnx" \
    --model_dir "$exp_dir" "$wav1" "$wav1" >/dev/null
  log "onnxruntime runs $exp_dir/extractor.onnx (wespeaker-lap embed --onnx ...)"
  stage_done "8 ONNX export"
fi
if [ ${#stage_names[@]} -gt 0 ]; then
  echo "| stage | wall time (s) |"
  echo "| --- | ---: |"
  total=0
  for i in "${!stage_names[@]}"; do
    echo "| ${stage_names[$i]} | ${stage_secs[$i]} |"
    total=$((total + stage_secs[i]))
  done
  echo "| total | $total |"
fi | { mkdir -p "$exp_dir"; tee "$exp_dir/stage_times.md"; }
log "done: $exp_dir"
