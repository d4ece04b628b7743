#!/usr/bin/env bash
# Your own recordings, described by CSV/TSV files (columns: audio, transcript, intent, and
# optionally speaker, id, slot:NAME; see `python -m data_prep.csv_manifest --help`).
#
# Stages (each one is skipped, without starting Python, when it is done with the same settings):
#   0  manifests and labels.json from the CSV files       -> ${data_dir}/manifests/
#   1-7  as in recipes/stages.sh: features, teacher fine-tune, teacher targets, CE-only
#        student, distilled student, cascades, evaluation (clean + noisy), report
#
# The students: conf/whisper.yaml (default) fine-tunes a pretrained Whisper encoder (the
# packaged tiny.en offline; hub encoders named in the file); conf/student.yaml is the
# from-scratch transformer of Jiang et al., trained with `--students ce,kd,ce_scratch,kd_scratch`.
#
#   bash recipes/csv/run.sh --csv train=train.csv,valid=dev.csv,test=test.csv --name mine
#   bash recipes/csv/run.sh --csv all.csv --name mine     # one file with a `split` column
set -euo pipefail

recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "${recipe_dir}/../common.sh"
. "${recipe_dir}/../stages.sh"

stage=0              # first stage to run
stop_stage=7         # last stage to run
csv=""               # [SPLIT=]PATH[,[SPLIT=]PATH...]: splits must include train and valid
corpus_dir=""        # folder relative CSV paths are taken from (default: the current folder)
skip_invalid=false   # drop invalid rows (listed in manifests/skipped.txt) instead of stopping
name=mine            # the corpus's name: data/<name>, exp/<name>
device=auto          # device of features, training and evaluation: auto | cpu | cuda
ngpu=1               # N > 1 runs the feature and training stages under torchrun with N processes
data_dir=""          # prepared data (default: data/<name>)
exp_dir=""           # experiment folder (default: exp/<name>)
students=ce,kd       # students to train: ce, kd (--config), ce_scratch, kd_scratch (--scratch-config)
config=""            # main student config (default: conf/whisper.yaml beside this script: fine-tuned Whisper)
scratch_config=""    # from-scratch baseline config (default: conf/student.yaml beside this script)
student_set=""       # SECTION.KEY=VALUE[,...] overrides of every student config (e.g. train.epochs=5)
teacher_config=""    # teacher config (default: conf/teacher.yaml beside this script)
distill="${DEFAULT_DISTILL}"  # stage 5 loss weights, added to the config's (ce stays on)
eval_splits=""       # comma-separated splits to evaluate (default: every split but train and valid)
noise=true           # stage 6 noise sweep (white and babble at --snrs, reverb, telephone)
snrs=20,15,10,5,0    # SNRs (dB) of the white and babble noise in the sweep
noisy_utterances=0   # students' noise sweep on a seeded subset of this many utterances a split (0: all)
python=python        # Python interpreter with slukd installed

option_names="stage stop_stage csv corpus_dir skip_invalid name device ngpu data_dir exp_dir students config scratch_config student_set teacher_config distill eval_splits noise snrs noisy_utterances python"
usage="Usage: $0 --csv train=train.csv,valid=dev.csv[,test=test.csv] [options]
Your own corpus end to end: manifests, features, teacher, students, cascades, evaluation, report."
parse_options "$@"

start_time=$(date +%s)
log "$0 $*"
data_dir="${data_dir:-data/${name}}"
exp_dir="${exp_dir:-exp/${name}}"
config="${config:-${recipe_dir}/conf/whisper.yaml}"
scratch_config="${scratch_config:-${recipe_dir}/conf/student.yaml}"
teacher_config="${teacher_config:-${recipe_dir}/conf/teacher.yaml}"
student_dirs  # checks --students before any stage runs

if [ "${stage}" -le 0 ] && [ "${stop_stage}" -ge 0 ]; then
  [ -n "${csv}" ] || die "stage 0 needs --csv (see --help)"
  log "Stage 0: manifests from ${csv} into ${data_dir}"
  prep_args=()
  inputs=()  # the CSV files, hashed into the stage's marker
  for item in ${csv//,/ }; do
    prep_args+=(--csv "${item}")
    path="${item#*=}"
    if [ "${path}" = "${path#/}" ]; then path="${corpus_dir:-.}/${path}"; fi
    if [ -f "${path}" ]; then inputs+=(--input "${path}"); fi
  done
  [ -z "${corpus_dir}" ] || prep_args+=(--corpus-dir "${corpus_dir}")
  [ "${skip_invalid}" = false ] || prep_args+=(--skip-invalid)
  run_corpus_stage "${inputs[@]}" -- "${python}" -m data_prep.csv_manifest --out "${data_dir}" "${prep_args[@]}"
fi

run_shared_stages

finish "${start_time}"
