#!/usr/bin/env bash
# The prepared GPU check: one script, about 8 minutes at most on one GPU.
#
#   bash benchmarks/gpu_check.sh                        # on a GPU: the full check
#   bash benchmarks/gpu_check.sh --device cpu --quick   # CPU, tiny models (CI runs this)
#   bash benchmarks/gpu_check.sh --out /tmp/check --sections "nccl steps"
#   bash benchmarks/gpu_check.sh --out "$OUT" --work /tmp/work   # few files in OUT
#
# Sections (benchmarks/gpu_check.py has the details of each):
#   nccl           single-GPU torchrun, an NCCL process group, DDP, fp16 AMP steps
#   resume         tools/train.sh on CUDA (fp16 + GradScaler): kill after epoch 1, resume,
#                  final weights equal to an uninterrupted run (within twice the
#                  difference of two uninterrupted runs; exact on CPU); bin.extract
#                  on GPU = CPU
#   extract_equal  Base+-sized extractor, GPU fp32 / bf16 against CPU fp32 (cosine >=
#                  0.9999 / 0.99 per utterance)
#   steps          phase-1 steps, bf16 autocast and fp16 + GradScaler, Base+ and Large
#                  random models, LAP_ASTP, SSL_ECAPA_TDNN_c512 and MHFA, batch 128 x 2 s
#                  (halved until it fits): step time, samples/s, peak GPU memory,
#                  extraction RTF
#   loader         crops/s of 8 loader workers against the fastest step's samples/s
# Every section's output goes to OUT/<section>.log; OUT/summary.md collects the
# figures with the machine and the commit. Exit status: the number of failed sections.
# Needs a CUDA build of PyTorch for --device cuda (tools/install.sh with TORCH_VERSION
# and the matching index); nothing is downloaded: every model is random.
# The Python: --python, else $PYTHON, else the project's venv (WESPEAKER_LAP_VENV, default
# .venv in this repository), else python on PATH; one that cannot import torch is refused.
set -euo pipefail

device=cuda                          # cuda or cpu
quick=false                          # tiny models and sizes (seconds; CI)
out=exp/gpu_check                    # logs, summary.md, steps.json
work=                                # the resume section's runs; default: OUT/resume
sections="nccl resume extract_equal steps loader"
python=${PYTHON:-}                   # a Python with this package's dependencies

while [ $# -gt 0 ]; do
  case $1 in
    --device) device=$2; shift 2 ;;
    --quick) quick=true; shift ;;
    --out) out=$2; shift 2 ;;
    --work) work=$2; shift 2 ;;
    --sections) sections=$2; shift 2 ;;
    --python) python=$2; shift 2 ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case $device in cuda|cpu) ;; *) echo "gpu_check.sh: --device cuda or cpu" >&2; exit 2 ;; esac
for s in $sections; do
  case $s in
    nccl|resume|extract_equal|steps|loader) ;;
    *) echo "gpu_check.sh: unknown section $s (valid: nccl resume extract_equal steps" \
         "loader)" >&2; exit 2 ;;
  esac
done

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "$python" ]; then
  venv=${WESPEAKER_LAP_VENV:-$root/.venv}
  if [ -x "$venv/bin/python" ]; then python=$venv/bin/python; else python=python; fi
fi
if ! "$python" -c 'import torch' >/dev/null 2>&1; then
  echo "gpu_check.sh: '$python' cannot import torch; run bash tools/install.sh (it makes" \
    "$root/.venv) or pass --python /path/to/venv/bin/python" >&2
  exit 2
fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$root"
export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# torchrun must be the one beside this Python
PATH="$(dirname "$(command -v "$python")"):$PATH"
export PATH
check=(benchmarks/gpu_check.py --device "$device")
$quick && check+=(--quick)
if $quick; then
  sizes=(--batch 4 --seconds 1 --steps 1 --rtf_utts 2 --rtf_batch 2)
  loader=(--workers 1 --num_utts 20 --batches 3 --shuffle_size 8 --batch 4 --seconds 1)
else
  sizes=()
  loader=()
fi

{
  echo "# GPU check ($device$($quick && echo ', quick'))"
  echo
  echo "- commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
  echo "- date: $(date -u '+%F %T UTC')"
  echo "- cpu: $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -n1), $(nproc) cores"
  if [ "$device" = cuda ] && command -v nvidia-smi >/dev/null 2>&1; then
    echo "- gpu: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | head -n1)"
  fi
  "$python" -c 'import torch; print(f"- torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")'
  echo
} > "$out/summary.md"

failed=0
declare -A status seconds
run_section() {  # name, command...: tee to OUT/name.log, remember pass/fail and time
  local name=$1 start=$SECONDS rc=0
  shift
  echo "=== $name: $*"
  "$@" 2>&1 | tee "$out/$name.log" || rc=$?
  seconds[$name]=$((SECONDS - start))
  if [ "$rc" -eq 0 ] && grep -q '"ok": true' "$out/$name.log"; then
    status[$name]=PASS
  else
    status[$name]=FAIL; failed=$((failed + 1))
  fi
  echo "=== $name: ${status[$name]} in ${seconds[$name]} s"
  {
    echo "## $name: ${status[$name]} (${seconds[$name]} s)"
    echo
    echo '```'
    grep -v -e '^{"section"' -e '^{"size"' "$out/$name.log" | tail -n 40 || true
    echo '```'
    echo
  } >> "$out/summary.md"
}

for s in $sections; do
  case $s in
    nccl)
      run_section nccl torchrun --standalone --nnodes=1 --nproc_per_node=1 "${check[@]}" nccl ;;
    resume)
      run_section resume "$python" "${check[@]}" resume --work "${work:-$out/resume}" ;;
    extract_equal)
      run_section extract_equal "$python" "${check[@]}" extract_equal ;;
    steps)
      run_section steps "$python" "${check[@]}" steps "${sizes[@]+"${sizes[@]}"}" \
        --json "$out/steps.json" ;;
    loader)
      if [ -f "$out/steps.json" ]; then
        run_section loader "$python" "${check[@]}" loader --steps_json "$out/steps.json" \
          "${loader[@]+"${loader[@]}"}"
      else
        echo "=== loader: skipped (no steps.json: run the steps section first)"
      fi ;;
  esac
done

echo
echo "| section | result | seconds |" | tee -a "$out/summary.md"
echo "|---|---|---:|" | tee -a "$out/summary.md"
for s in $sections; do
  if [ -n "${status[$s]:-}" ]; then
    echo "| $s | ${status[$s]} | ${seconds[$s]} |" | tee -a "$out/summary.md"
  fi
done
echo "summary: $out/summary.md"
exit "$failed"
