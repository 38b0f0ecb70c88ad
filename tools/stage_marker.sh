# shellcheck shell=bash
# Done-markers that remember the options their step ran with; sourced by every recipe
# (after tools/parse_options.sh):
#
#   if ! stage_is_done "$data/.lists_shard.done" "seed=$seed" "num_utts_per_shard=$n"; then
#     ...the work...
#     stage_done_with "$data/.lists_shard.done" "seed=$seed" "num_utts_per_shard=$n"
#   fi
#
# A marker holds a header line and one name=value line per option, written atomically
# (a temporary file beside it, then mv). stage_is_done returns 0 (skip the work) when the
# marker records the same options, in any order. When they differ it logs the options
# that changed, removes the stale marker (an interrupted redo must not pass for the old
# work) and returns 1; a missing marker returns 1 silently. An empty marker was written
# by the recipes before they recorded options (`touch`): it counts as done, with a log
# line saying its options are unknown (delete it to redo the step).
#
#   stage_is_done [--legacy OLD] MARKER [name=value ...]
# With --legacy, a missing MARKER whose work an older recipe covered by the (empty)
# marker OLD, e.g. the one marker of a whole stage, counts as done the same way.

__sm_header="# stage marker (tools/stage_marker.sh): the options this step ran with"

__sm_log() { echo "$(date '+%F %T') (stage marker) $*"; }

__sm_check_options() {  # function name=value ...: every argument is one line name=value
  local fn=$1 opt
  shift
  for opt in "$@"; do
    if ! [[ $opt =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || [[ $opt == *$'\n'* ]]; then
      echo "$fn: option '$opt' is not name=value on one line" >&2
      exit 1
    fi
  done
}

__sm_legacy_done() {  # file: an empty (pre-options) marker; logs that it is taken as done
  __sm_log "$1: written before markers recorded their options; taken as done" \
    "(delete it to redo the step with the current options)"
}

stage_done_with() {  # MARKER [name=value ...]: the step is done, with these options
  local marker=$1 tmp
  shift
  __sm_check_options stage_done_with "$@"
  mkdir -p "$(dirname "$marker")"
  tmp=$marker.tmp.$$  # created under the umask, as touch did (mktemp's would be 0600)
  printf '%s\n' "$__sm_header" "$@" > "$tmp"
  mv -f "$tmp" "$marker"
}

stage_is_done() {  # [--legacy OLD] MARKER [name=value ...]: 0 when done with these options
  local legacy='' marker line name changed=() opt
  if [ "${1:-}" = --legacy ]; then legacy=$2; shift 2; fi
  marker=$1
  shift
  __sm_check_options stage_is_done "$@"
  if [ ! -e "$marker" ]; then
    if [ -n "$legacy" ] && [ -f "$legacy" ] && [ ! -s "$legacy" ]; then
      __sm_legacy_done "$legacy"
      return 0
    fi
    return 1
  fi
  if [ ! -s "$marker" ]; then
    __sm_legacy_done "$marker"
    return 0
  fi
  local -A recorded=()
  while IFS= read -r line; do
    [[ $line == "#"* ]] && continue
    recorded[${line%%=*}]=${line#*=}
  done < "$marker"
  local -A now=()
  for opt in "$@"; do
    name=${opt%%=*}
    now[$name]=${opt#*=}
    if [ -z "${recorded[$name]+set}" ]; then
      changed+=("$name (not recorded -> '${now[$name]}')")
    elif [ "${recorded[$name]}" != "${now[$name]}" ]; then
      changed+=("$name ('${recorded[$name]}' -> '${now[$name]}')")
    fi
  done
  for name in "${!recorded[@]}"; do
    [ -n "${now[$name]+set}" ] || changed+=("$name ('${recorded[$name]}' -> no longer an option)")
  done
  if [ ${#changed[@]} -eq 0 ]; then
    return 0
  fi
  local joined
  joined=$(printf ', %s' "${changed[@]}")
  __sm_log "$marker: redoing the step, options changed since it was done: ${joined:2}"
  rm -f "$marker"
  return 1
}
