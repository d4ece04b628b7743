#!/usr/bin/env bash
# The built-in spoken-commands corpus, end to end (see README.md).
#
# Stages (each one skips when its output is complete):
#   0  synthesise the corpus (FSC label space, offline TTS) -> $data_dir/manifests/
#   1  log-mel features + CMVN for every split               -> $data_dir/fbank/<split>/
#
# Later stages (teacher, students, evaluation, report) are added as the toolkit grows.
set -euo pipefail

recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "${recipe_dir}/../common.sh"

stage=0              # first stage to run
stop_stage=1         # last stage to run
size=small           # corpus size preset: tiny | small | full
seed=0               # seed of the corpus plan
engines=espeak,piper,flite,festival  # TTS engines to use when installed
num_workers=0        # worker processes for synthesis (0: every core)
device=auto          # feature extraction device: auto | cpu | cuda
ngpu=1               # N > 1 runs feature extraction under torchrun with N processes
data_root=data       # corpora are written under here
python=python        # Python interpreter with slukd installed

option_names="stage stop_stage size seed engines num_workers device ngpu data_root python"
usage="Usage: $0 [options]
Builds the built-in synthetic corpus (and, as stages are added, the whole pipeline)."
parse_options "$@"

case "${size}" in tiny|small|full) ;; *) die "--size must be tiny, small or full, got '${size}'" ;; esac

launch() {
  # launch OUTPUT_DIR SUBCOMMAND ARGS...: run `slukd SUBCOMMAND`, under torchrun when ngpu > 1.
  local output="$1"; shift
  if [ "${ngpu}" -gt 1 ]; then
    run_logged "${python}" -m torch.distributed.run --standalone --nproc_per_node "${ngpu}" \
      -m pipeline.cli "$@"
  else
    run_logged "${python}" -m pipeline.cli "$@"
  fi
  [ -f "${output}/.done" ] || die "${output} is incomplete after: slukd $*"
}

start_time=$(date +%s)
log "$0 $*"
data_dir="${data_root}/synthetic_${size}"

if [ "${stage}" -le 0 ] && [ "${stop_stage}" -ge 0 ]; then
  log "Stage 0: synthesise the ${size} corpus into ${data_dir}"
  run_logged "${python}" -m data_prep.synthetic \
    --out "${data_dir}" --size "${size}" --seed "${seed}" \
    --engines "${engines}" --num-workers "${num_workers}"
fi

if [ "${stage}" -le 1 ] && [ "${stop_stage}" -ge 1 ]; then
  log "Stage 1: log-mel features and CMVN for every split into ${data_dir}/fbank"
  for split in train valid test test_unseen_phrasing; do
    launch "${data_dir}/fbank/${split}" features \
      --manifest "${data_dir}/manifests/${split}.jsonl" --out "${data_dir}/fbank/${split}" --device "${device}"
  done
fi

log "manifests: ${data_dir}/manifests (stats: ${data_dir}/manifests/stats.json)"
log "done in $(( $(date +%s) - start_time )) s"
