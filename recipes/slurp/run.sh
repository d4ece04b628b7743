#!/usr/bin/env bash
# SLURP (Bastianelli et al. 2020): scenario_action intents over 18 scenarios, 58 h of real
# recordings (headset and far-field), optional 43 h of synthetic speech; see RESULTS.md.
#
# Stages (each one is skipped, without starting Python, when it is done with the same settings):
#   0  manifests: train, valid (devel) and test, one utterance per recording -> ${data_dir}/manifests/
#   1-7  as in recipes/stages.sh: features, teacher fine-tune, teacher targets, CE-only
#        student, distilled student, cascades, evaluation (clean + noisy), report
#
# The students: conf/whisper.yaml (default) fine-tunes a pretrained Whisper encoder (the
# packaged tiny.en offline; hub encoders named in the file); conf/student.yaml is the
# from-scratch transformer of Jiang et al., trained with `--students ce,kd,ce_scratch,kd_scratch`.
#
#   bash recipes/slurp/run.sh --corpus-dir /data/slurp --with-synthetic true
#   bash recipes/slurp/run.sh --corpus-dir /data/slurp --ngpu 4
set -euo pipefail

recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "${recipe_dir}/../common.sh"
. "${recipe_dir}/../stages.sh"

stage=0              # first stage to run
stop_stage=7         # last stage to run
corpus_dir=""        # the SLURP repository folder (holds dataset/slurp/*.jsonl)
audio_dir=""         # folder holding slurp_real/ and slurp_synth/ (default: CORPUS_DIR/audio)
with_synthetic=false # add the synthetic recordings (train_synthetic.jsonl) to train
recordings=all       # all | headset (real recordings to keep)
device=auto          # device of features, training and evaluation: auto | cpu | cuda
ngpu=1               # N > 1 runs the feature and training stages under torchrun with N processes
data_dir=data/slurp  # prepared data
exp_dir=exp/slurp    # experiment folder
students=ce,kd       # students to train: ce, kd (--config), ce_scratch, kd_scratch (--scratch-config)
config=""            # main student config (default: conf/whisper.yaml beside this script: fine-tuned Whisper)
scratch_config=""    # from-scratch baseline config (default: conf/student.yaml beside this script)
student_set=""       # SECTION.KEY=VALUE[,...] overrides of every student config (e.g. train.epochs=5)
teacher_config=""    # teacher config (default: conf/teacher.yaml beside this script)
distill="${DEFAULT_DISTILL}"  # stage 5 loss weights, added to the config's (ce stays on)
eval_splits=test     # comma-separated splits to evaluate
noise=true           # stage 6 noise sweep (white and babble at --snrs, reverb, telephone)
snrs=20,15,10,5,0    # SNRs (dB) of the white and babble noise in the sweep
noisy_utterances=0   # students' noise sweep on a seeded subset of this many utterances a split (0: all)
python=python        # Python interpreter with slukd installed

option_names="stage stop_stage corpus_dir audio_dir with_synthetic recordings device ngpu data_dir exp_dir students config scratch_config student_set teacher_config distill eval_splits noise snrs noisy_utterances python"
usage="Usage: $0 --corpus-dir DIR [options]
SLURP end to end: manifests, features, teacher, students, cascades, evaluation, report."
parse_options "$@"

case "${with_synthetic}" in true|false) ;; *) die "--with-synthetic must be true or false, got '${with_synthetic}'" ;; esac

start_time=$(date +%s)
log "$0 $*"
config="${config:-${recipe_dir}/conf/whisper.yaml}"
scratch_config="${scratch_config:-${recipe_dir}/conf/student.yaml}"
teacher_config="${teacher_config:-${recipe_dir}/conf/teacher.yaml}"
student_dirs  # checks --students before any stage runs

if [ "${stage}" -le 0 ] && [ "${stop_stage}" -ge 0 ]; then
  [ -n "${corpus_dir}" ] || die "stage 0 needs --corpus-dir (the SLURP folder)"
  [ -d "${corpus_dir}" ] || die "--corpus-dir ${corpus_dir}: no such folder"
  log "Stage 0: manifests of ${corpus_dir} into ${data_dir}"
  prep_args=(--recordings "${recordings}")
  [ -z "${audio_dir}" ] || prep_args+=(--audio-dir "${audio_dir}")
  [ "${with_synthetic}" = false ] || prep_args+=(--with-synthetic)
  inputs=()  # the metadata files, hashed into the stage's marker
  for path in "${corpus_dir}"/dataset/slurp/*.jsonl; do
    if [ -f "${path}" ]; then inputs+=(--input "${path}"); fi
  done
  run_corpus_stage "${inputs[@]}" -- "${python}" -m data_prep.slurp --corpus-dir "${corpus_dir}" --out "${data_dir}" "${prep_args[@]}"
fi

run_shared_stages

finish "${start_time}"
