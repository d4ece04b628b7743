#!/usr/bin/env bash
# Shared helpers for every recipe: logging and option parsing (Kaldi/ESPnet style).
# Source it after declaring the options with their defaults:
#
#   stage=0        # first stage to run
#   stop_stage=7   # last stage to run
#   . "$(dirname "$0")/../common.sh"
#   parse_options "$@"
#
# Every variable named in `option_names` becomes a `--name value` flag (underscores as dashes).
# `--help` prints the usage text and the defaults; an unknown option is fatal.

log() {
  # log "message": timestamped, with the calling script and line.
  local fname=${BASH_SOURCE[1]##*/}
  echo -e "$(date '+%Y-%m-%d %H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*" >&2
}

die() {
  log "error: $*"
  exit 1
}

parse_options() {
  # Set each declared option from the command line; needs `usage` and `option_names` set.
  while [ $# -gt 0 ]; do
    case "$1" in
      -h|--help)
        echo "$usage"
        echo
        echo "Options (default in brackets):"
        local name
        for name in ${option_names}; do
          printf '  --%-14s [%s]\n' "${name//_/-}" "${!name}"
        done
        exit 0
        ;;
      --*=*)
        set -- "${1%%=*}" "${1#*=}" "${@:2}"
        continue
        ;;
      --*)
        local key="${1#--}"
        key="${key//-/_}"
        if [[ " ${option_names} " != *" ${key} "* ]]; then
          echo "$0: unknown option $1 (see --help)" >&2
          exit 2
        fi
        if [ $# -lt 2 ]; then
          echo "$0: option $1 needs a value" >&2
          exit 2
        fi
        printf -v "$key" '%s' "$2"
        shift 2
        ;;
      *)
        echo "$0: unexpected argument $1 (see --help)" >&2
        exit 2
        ;;
    esac
  done
}

run_logged() {
  # run_logged CMD ARGS...: log the command line, then run it.
  log "running: $*"
  "$@"
}
