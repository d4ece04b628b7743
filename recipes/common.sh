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
        local name comment
        for name in ${option_names}; do
          # the comment on the line that declares the option's default, in the calling script
          comment=$(sed -n "s/^${name}=[^#]*#[[:space:]]*//p" "$0" | head -n 1)
          printf '  --%-16s %s [%s]\n' "${name//_/-}" "${comment}" "${!name}"
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

run_slukd() {
  # run_slukd OUTPUT_DIR SUBCOMMAND ARGS...: `slukd SUBCOMMAND ARGS`, under torchrun with
  # ${ngpu} processes when ngpu > 1; dies unless OUTPUT_DIR/.done exists afterwards.
  # Needs ${python} (an interpreter with slukd installed) and ${ngpu}.
  local output="$1"; shift
  if [ "${ngpu:-1}" -gt 1 ]; then
    run_logged "${python}" -m torch.distributed.run --standalone --nproc_per_node "${ngpu}" \
      -m pipeline.cli "$@"
  else
    run_logged "${python}" -m pipeline.cli "$@"
  fi
  [ -f "${output}/.done" ] || die "${output} is incomplete after: slukd $*"
}

manifest_splits() {
  # manifest_splits DIR: the split names of DIR/<split>.jsonl, train and valid first.
  local dir="$1" path name names="" ordered=""
  [ -d "${dir}" ] || die "${dir}: no manifests (run stage 0 first)"
  for path in "${dir}"/*.jsonl; do
    [ -e "${path}" ] || continue
    name=$(basename "${path}" .jsonl)
    names="${names} ${name}"
  done
  for name in train valid; do
    [[ " ${names} " == *" ${name} "* ]] && ordered="${ordered} ${name}"
  done
  for name in ${names}; do
    [[ " train valid " == *" ${name} "* ]] || ordered="${ordered} ${name}"
  done
  echo "${ordered# }"
}

finish() {
  # finish START_SECONDS: log the total elapsed time.
  log "done in $(( $(date +%s) - $1 )) s"
}
