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
      elif [[ $__po_name =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] && [[ ${!__po_name-} == true || ${!__po_name-} == false ]]; then
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
  printf -v "$__po_name" '%s' "$__po_value"
done
set -- "${__po_positional[@]+"${__po_positional[@]}"}"
unset __po_name __po_value __po_opt __po_script
