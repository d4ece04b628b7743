#!/usr/bin/env bash
# The built-in spoken-commands corpus, end to end (see README.md).
#
# Stages:
#   0  synthesise the corpus (FSC label space, offline TTS) -> $data_dir/manifests/
#
# Later stages (features, teacher, students, evaluation, report) are added as the toolkit
# grows; each one is skipped when its output is complete.
set -euo pipefail

recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "${recipe_dir}/../common.sh"

stage=0              # first stage to run
stop_stage=0         # last stage to run
size=small           # corpus size preset: tiny | small | full
seed=0               # seed of the corpus plan
engines=espeak,piper,flite,festival  # TTS engines to use when installed
num_workers=0        # worker processes for synthesis (0: every core)
data_root=data       # corpora are written under here
python=python        # Python interpreter with slukd installed

option_names="stage stop_stage size seed engines num_workers data_root python"
usage="Usage: $0 [options]
Builds the built-in synthetic corpus (and, as stages are added, the whole pipeline)."
parse_options "$@"

case "${size}" in tiny|small|full) ;; *) die "--size must be tiny, small or full, got '${size}'" ;; esac

start_time=$(date +%s)
log "$0 $*"
data_dir="${data_root}/synthetic_${size}"

if [ "${stage}" -le 0 ] && [ "${stop_stage}" -ge 0 ]; then
  log "Stage 0: synthesise the ${size} corpus into ${data_dir}"
  run_logged "${python}" -m data_prep.synthetic \
    --out "${data_dir}" --size "${size}" --seed "${seed}" \
    --engines "${engines}" --num-workers "${num_workers}"
fi

log "manifests: ${data_dir}/manifests (stats: ${data_dir}/manifests/stats.json)"
log "done in $(( $(date +%s) - start_time )) s"
