#!/usr/bin/env bash
# Fluent Speech Commands (Lugosch et al. 2019): 31 intents, 97 speakers, 19 h; see RESULTS.md.
#
# Stages (each one is skipped, without starting Python, when it is done with the same settings):
#   0  manifests from the released corpus (or a challenge split) -> ${data_dir}/manifests/
#   1-7  as in recipes/stages.sh: features, teacher fine-tune, teacher targets, CE-only
#        student, distilled student, cascades, evaluation (clean + noisy), report
#
# The students: conf/whisper.yaml (default) fine-tunes a pretrained Whisper encoder (the
# packaged tiny.en offline; hub encoders named in the file); conf/student.yaml is the
# from-scratch transformer of Jiang et al., trained with `--students ce,kd,ce_scratch,kd_scratch`.
#
#   bash recipes/fsc/run.sh --corpus-dir /data/fluent_speech_commands_dataset
#   bash recipes/fsc/run.sh --corpus-dir ... --split speaker --challenge-dir /data/fsc_challenge
#   bash recipes/fsc/run.sh --corpus-dir ... --ngpu 4     # features and training under torchrun
#
# The challenge splits (Arora et al. 2022: speakers or utterances unseen in training) are CSVs
# with the release's columns, named <split>_{train,valid,test}_data.csv in --challenge-dir.
set -euo pipefail

recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "${recipe_dir}/../common.sh"
. "${recipe_dir}/../stages.sh"

stage=0              # first stage to run
stop_stage=7         # last stage to run
corpus_dir=""        # the released corpus folder (holds data/train_data.csv and wavs/)
split=original       # original | speaker | utterance (the challenge splits)
challenge_dir=""     # folder of the challenge split CSVs (default: CORPUS_DIR/data/challenge_splits)
device=auto          # device of features, training and evaluation: auto | cpu | cuda
ngpu=1               # N > 1 runs the feature and training stages under torchrun with N processes
data_dir=""          # prepared data (default: data/fsc, or data/fsc_<split>)
exp_dir=""           # experiment folder (default: exp/fsc, or exp/fsc_<split>)
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

option_names="stage stop_stage corpus_dir split challenge_dir device ngpu data_dir exp_dir students config scratch_config student_set teacher_config distill eval_splits noise snrs noisy_utterances python"
usage="Usage: $0 --corpus-dir DIR [options]
Fluent Speech Commands end to end: manifests, features, teacher, students, cascades, evaluation, report."
parse_options "$@"

case "${split}" in original|speaker|utterance) ;; *) die "--split must be original, speaker or utterance, got '${split}'" ;; esac

start_time=$(date +%s)
log "$0 $*"
suffix=""; [ "${split}" = original ] || suffix="_${split}"
data_dir="${data_dir:-data/fsc${suffix}}"
exp_dir="${exp_dir:-exp/fsc${suffix}}"
config="${config:-${recipe_dir}/conf/whisper.yaml}"
scratch_config="${scratch_config:-${recipe_dir}/conf/student.yaml}"
teacher_config="${teacher_config:-${recipe_dir}/conf/teacher.yaml}"
student_dirs  # checks --students before any stage runs

if [ "${stage}" -le 0 ] && [ "${stop_stage}" -ge 0 ]; then
  [ -n "${corpus_dir}" ] || die "stage 0 needs --corpus-dir (the released Fluent Speech Commands folder)"
  [ -d "${corpus_dir}" ] || die "--corpus-dir ${corpus_dir}: no such folder"
  log "Stage 0: ${split} split manifests of ${corpus_dir} into ${data_dir}"
  split_args=()
  if [ "${split}" != original ]; then
    challenge_dir="${challenge_dir:-${corpus_dir}/data/challenge_splits}"
    split_args=(--splits "train=${challenge_dir}/${split}_train_data.csv,valid=${challenge_dir}/${split}_valid_data.csv,test=${challenge_dir}/${split}_test_data.csv")
  fi
  inputs=()  # the split files, hashed into the stage's marker
  for path in "${corpus_dir}"/data/*_data.csv "${challenge_dir:-${corpus_dir}/data/challenge_splits}"/*_data.csv; do
    if [ -f "${path}" ]; then inputs+=(--input "${path}"); fi
  done
  run_corpus_stage "${inputs[@]}" -- "${python}" -m data_prep.fsc --corpus-dir "${corpus_dir}" --out "${data_dir}" "${split_args[@]}"
fi

run_shared_stages

finish "${start_time}"
