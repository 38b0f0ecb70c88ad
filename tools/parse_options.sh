# shellcheck shell=bash
# Kaldi-style option parsing for recipes; source it after the defaults block:
#
#   stage=1        # first stage to run
#   quick=false    # small sizes
#   . tools/parse_options.sh
#
# Every `--name value` (or `--name=value`; dashes in name become underscores)
# sets the shell variable `name`, which must be assigned at the start of a line
# of the defaults block (the lines before the one sourcing this file): an
# unknown option is an error that lists the valid ones.
# A variable whose default is true/false may be given without a value
# (`--quick` means `--quick true`). `--config` is a path the recipe passes to
# Python (a YAML file), never sourced as shell. `--help` prints $help_message
# (when set) and the options with their current values.
#
# Values are checked before any work, each error one line naming the option and value:
# an option whose default is an integer takes integers only, one whose default is
# true/false takes true or false only; an option with an empty default whose comment
# starts with "(integer)" takes an integer or nothing (`num_avg=  # (integer) ...`).
# Where both --stage and --stop_stage exist, stage must not come after stop_stage.

# The recipe file, read for its defaults block: $0 as invoked, or (for recipes
# that cd into their own directory first) its basename in the current directory.
if [ -r "$0" ]; then
  __po_script=$0
elif [ -r "$(basename "$0")" ]; then
  __po_script=$(basename "$0")
else
  echo "parse_options.sh: cannot read the recipe $0 (from $PWD) for its options" >&2
  exit 1
fi

__po_valid_options() {
  # the variables the recipe defined before sourcing: its defaults block
  local line
  while IFS= read -r line; do
    [[ $line == *parse_options.sh* ]] && break  # the defaults block ends here
    [[ $line =~ ^help_message= ]] && continue
    [[ $line =~ ^([A-Za-z_][A-Za-z0-9_]*)=.*$ ]] && printf -- '--%s ' "${BASH_REMATCH[1]}"
  done < "$__po_script"
}

# the kind of every option, from its default: integer, boolean, integer_or_empty, or none
declare -A __po_kinds=()
while IFS= read -r __po_line; do
  [[ $__po_line == *parse_options.sh* ]] && break
  [[ $__po_line =~ ^([A-Za-z_][A-Za-z0-9_]*)=[^#]*(#[[:space:]]*(.*))?$ ]] || continue
  __po_name=${BASH_REMATCH[1]}
  __po_comment=${BASH_REMATCH[3]-}
  __po_value=${!__po_name-}
  if [[ $__po_value =~ ^-?[0-9]+$ ]]; then
    __po_kinds[$__po_name]=integer
  elif [[ $__po_value == true || $__po_value == false ]]; then
    __po_kinds[$__po_name]=boolean
  elif [[ -z $__po_value && $__po_comment == "(integer)"* ]]; then
    __po_kinds[$__po_name]=integer_or_empty
  fi
done < "$__po_script"

__po_check() {  # name value: the value fits the option's kind, else a one-line error
  case ${__po_kinds[$1]-} in
    integer|integer_or_empty)
      if ! [[ $2 =~ ^-?[0-9]+$ ]] && ! [[ -z $2 && ${__po_kinds[$1]} == integer_or_empty ]]
      then
        echo "$0: option --$1 takes an integer, got '$2'" >&2; exit 1
      fi ;;
    boolean)
      if [[ $2 != true && $2 != false ]]; then
        echo "$0: option --$1 takes true or false, got '$2'" >&2; exit 1
      fi ;;
  esac
}

__po_positional=()
while [ $# -gt 0 ]; do
  case "$1" in
    --help|-h)
      [ -n "${help_message:-}" ] && echo "$help_message"
      echo "options (current values):"
      for __po_opt in $(__po_valid_options); do
        __po_name=${__po_opt#--}
        printf '  %-22s %s\n' "$__po_opt" "${!__po_name-}"
      done
      exit 0 ;;
    --*=*)
      __po_name=${1%%=*}; __po_name=${__po_name#--}; __po_name=${__po_name//-/_}
      __po_value=${1#*=}; shift ;;
    --*)
      __po_name=${1#--}; __po_name=${__po_name//-/_}; shift
      if [ $# -gt 0 ] && [[ $1 != --* ]]; then
        __po_value=$1; shift
      elif [ "${__po_kinds[$__po_name]-}" = boolean ]; then
        __po_value=true
      else
        echo "$0: option --$__po_name needs a value" >&2; exit 1
      fi ;;
    *)
      __po_positional+=("$1"); shift; continue ;;
  esac
  if [[ " $(__po_valid_options)" != *" --$__po_name "* ]]; then
    echo "$0: unknown option --$__po_name; valid: $(__po_valid_options)" >&2
    exit 1
  fi
  __po_check "$__po_name" "$__po_value"
  printf -v "$__po_name" '%s' "$__po_value"
done
# shellcheck disable=SC2154  # stage and stop_stage are the recipe's, when it has both
if [ "${__po_kinds[stage]-}" = integer ] && [ "${__po_kinds[stop_stage]-}" = integer ] \
    && [ "$stage" -gt "$stop_stage" ]; then
  echo "$0: --stage $stage comes after --stop_stage $stop_stage: no stage to run" >&2
  exit 1
fi
set -- "${__po_positional[@]+"${__po_positional[@]}"}"
unset __po_name __po_value __po_opt __po_script __po_line __po_comment __po_kinds
unset -f __po_check
