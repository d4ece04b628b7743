#!/usr/bin/env bash
# The built-in spoken-commands corpus, end to end (see README.md).
#
# Stages (each one skips when its output is complete):
#   0  synthesise the corpus (FSC label space, offline TTS) -> $data_dir/manifests/
#   1  log-mel features + CMVN for every split               -> $data_dir/fbank/<split>/
#   2  fine-tune the BERT teacher on the transcripts         -> $exp_dir/teacher/
#   3  export the teacher's targets (unique transcripts)     -> $exp_dir/teacher/targets/
#
# Later stages (students, evaluation, report) are added as the toolkit grows.
set -euo pipefail

recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "${recipe_dir}/../common.sh"

stage=0              # first stage to run
stop_stage=3         # last stage to run
size=small           # corpus size preset: tiny | small | full
seed=0               # seed of the corpus plan
engines=espeak,piper,flite,festival  # TTS engines to use when installed
num_workers=0        # worker processes for synthesis (0: every core)
device=auto          # feature extraction device: auto | cpu | cuda
ngpu=1               # N > 1 runs feature extraction under torchrun with N processes
data_root=data       # corpora are written under here
exp_root=exp         # experiments are written under here
conf_dir=""          # recipe configs (default: conf/ beside this script)
python=python        # Python interpreter with slukd installed

option_names="stage stop_stage size seed engines num_workers device ngpu data_root exp_root conf_dir python"
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
exp_dir="${exp_root}/synthetic_${size}"
conf_dir="${conf_dir:-${recipe_dir}/conf}"

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

if [ "${stage}" -le 2 ] && [ "${stop_stage}" -ge 2 ]; then
  log "Stage 2: fine-tune the teacher on the transcripts into ${exp_dir}/teacher"
  run_logged "${python}" -m pipeline.cli teacher train --data "${data_dir}" --out "${exp_dir}/teacher" \
    --config "${conf_dir}/teacher.yaml" --device "${device}"
  [ -f "${exp_dir}/teacher/.done" ] || die "${exp_dir}/teacher is incomplete"
fi

if [ "${stage}" -le 3 ] && [ "${stop_stage}" -ge 3 ]; then
  log "Stage 3: export the teacher's targets into ${exp_dir}/teacher/targets"
  run_logged "${python}" -m pipeline.cli teacher export --data "${data_dir}" --model "${exp_dir}/teacher" \
    --out "${exp_dir}/teacher/targets" --splits train,valid --device "${device}"
  [ -f "${exp_dir}/teacher/targets/.done" ] || die "${exp_dir}/teacher/targets is incomplete"
fi

log "manifests: ${data_dir}/manifests (stats: ${data_dir}/manifests/stats.json)"
if [ -f "${exp_dir}/teacher/metrics.json" ]; then
  log "teacher metrics: ${exp_dir}/teacher/metrics.json"
fi
log "done in $(( $(date +%s) - start_time )) s"
