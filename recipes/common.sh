#!/usr/bin/env bash
# Shared helpers for every recipe: logging, option parsing (Kaldi/ESPnet style) and steps that
# skip in the shell when they are done (icefall-style markers). Source it after declaring the
# options with their defaults:
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
          printf '  --%-18s %s [%s]\n' "${name//_/-}" "${comment}" "${!name}"
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

# ---------------------------------------------------------------------------------------------
# Steps that skip in the shell
#
# A step is one command with one output (a folder's .done marker, an eval file). When the step
# succeeds, `run_step` writes a marker beside that output holding the step's settings: the
# command line, the SHA-256 of every file the command line names (configs, manifests, CSVs), of
# every input the stage declares (the .done markers of the stages it reads), of the slukd
# sources and of the installed packages. A rerun whose settings equal the marker's, with the
# output still there, is skipped without starting Python; any change runs the command again,
# and the command's own fingerprint then decides what to recompute.

slukd_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

code_fingerprint() {
  # The SHA-256 of slukd's Python sources (pipeline/, data_prep/), once per recipe run.
  if [ -z "${_code_fingerprint:-}" ]; then
    _code_fingerprint=$(find "${slukd_root}/pipeline" "${slukd_root}/data_prep" -name '*.py' -print0 \
      | sort -z | xargs -0 cat | sha256sum | cut -d' ' -f1)
  fi
  echo "${_code_fingerprint}"
}

environment_fingerprint() {
  # The interpreter and the names (with versions) of the packages installed beside it, once per
  # run: installing or upgrading a package (a TTS engine, torch) reruns every step.
  if [ -z "${_environment_fingerprint:-}" ]; then
    local interpreter bin_dir
    interpreter=$(command -v "${python:-python}" || echo "${python:-python}")
    bin_dir=$(dirname "${interpreter}")
    _environment_fingerprint=$( { echo "${interpreter}"; readlink -f "${interpreter}" || true
      ls -d "${bin_dir}"/../lib/python3*/site-packages/*.dist-info 2>/dev/null | sed 's|.*/||' || true
    } | sha256sum | cut -d' ' -f1)
  fi
  echo "${_environment_fingerprint}"
}

step_settings() {
  # step_settings OUTPUT INPUT_LIST -- COMMAND...: the text a step's marker holds (INPUT_LIST is
  # one word a line: files, or "setting:TEXT" for settings that are not files). A file the command
  # names is hashed, unless it is the step's own OUTPUT (absent on the first run).
  local output="$1" inputs="$2"; shift 3
  local word item
  echo "command: $(printf '%q ' "$@")"
  echo "code: $(code_fingerprint)"
  echo "environment: $(environment_fingerprint)"
  for word in "$@"; do
    if [ -f "${word}" ] && [ "${word}" != "${output}" ]; then
      echo "file: ${word} $(sha256sum < "${word}" | cut -d' ' -f1)"
    fi
  done
  while IFS= read -r item; do
    [ -n "${item}" ] || continue
    case "${item}" in
      setting:*) echo "${item}" ;;
      *) if [ -f "${item}" ]; then
           echo "input: ${item} $(sha256sum < "${item}" | cut -d' ' -f1)"
         else
           echo "input: ${item} missing"
         fi ;;
    esac
  done <<< "${inputs}"
}

run_step() {
  # run_step OUTPUT MARKER [--input FILE | --setting TEXT]... -- COMMAND [ARG...]
  # Run COMMAND, then check that OUTPUT (a file) exists and write MARKER; skip it when MARKER
  # already holds these settings and OUTPUT exists.
  local output="$1" marker="$2"; shift 2
  local inputs=""
  while [ $# -gt 0 ] && [ "$1" != "--" ]; do
    case "$1" in
      --input) inputs+="$2"$'\n' ;;
      --setting) inputs+="setting:$2"$'\n' ;;
      *) die "run_step: expected --input, --setting or --, got '$1'" ;;
    esac
    shift 2
  done
  [ "${1:-}" = "--" ] || die "run_step: no command after --"
  shift
  local settings
  settings=$(step_settings "${output}" "${inputs}" -- "$@")
  if [ -f "${output}" ] && [ -f "${marker}" ] && [ "$(cat "${marker}")" = "${settings}" ]; then
    log "done with these settings, skipping: ${output}"
    return 0
  fi
  rm -f "${marker}"
  run_logged "$@"
  [ -f "${output}" ] || die "${output} is missing after: $*"
  printf '%s\n' "${settings}" > "${marker}.tmp" && mv -f "${marker}.tmp" "${marker}"
}

slukd_command() {
  # slukd_command SUBCOMMAND ARGS...: the command line of `slukd SUBCOMMAND ARGS`, one word a
  # line, under torchrun with ${ngpu} processes when ngpu > 1 (for feature and training stages).
  if [ "${ngpu:-1}" -gt 1 ]; then
    printf '%s\n' "${python}" -m torch.distributed.run --standalone --nproc_per_node "${ngpu}" \
      -m pipeline.cli "$@"
  else
    printf '%s\n' "${python}" -m pipeline.cli "$@"
  fi
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
