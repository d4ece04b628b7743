#!/usr/bin/env bash
# The built-in spoken-commands corpus, end to end, with nothing to download (see README.md).
#
# Stages (each one is skipped, without starting Python, when it is done with the same settings):
#   0  synthesise the corpus (FSC label space, offline TTS) -> ${data_dir}/manifests/
#   1  log-mel features + CMVN for every split               -> ${data_dir}/fbank/<split>/
#   2  fine-tune the BERT teacher on the transcripts         -> ${exp_dir}/teacher/
#   3  export the teacher's targets                          -> ${exp_dir}/teacher/targets/
#   4  the main student with cross-entropy only             -> ${exp_dir}/student_ce/
#   5  the main student distilled from the teacher (the model to deploy) -> ${exp_dir}/student_kd/
#      and the from-scratch baseline, distilled the same way -> ${exp_dir}/student_kd_scratch/
#   6  the cascade baselines (Whisper tiny.en ASR + teacher) -> ${exp_dir}/cascade*/; evaluate
#      teacher (text), students and cascades on test, test_unseen_phrasing and test_unseen_engine
#                                                            -> <model>/eval/<split>.json
#   7  report                                                -> ${exp_dir}/report/report.{md,html}
#
# The students (--students picks which; --config / --scratch-config their configs):
#   ce, kd       conf/whisper.yaml: Whisper tiny.en's pretrained encoder, frozen, one new
#                transformer layer and attention pooling; CE only (ce) and distilled (kd)
#   ce_scratch, kd_scratch  conf/student.yaml: the from-scratch transformer (Jiang et al.'s setting)
#
# The 20-minute budget of `make run` (size small, 2 CPU cores, stage 0 included): clean accuracy
# on the full test splits; the students' noise sweep (white and babble at 20, 10 and 0 dB SNR,
# reverberation RT60 0.3-0.6 s, a telephone channel) on a seeded subset of 200 utterances a split
# (--noisy-utterances, --snrs); the cascades on 50 utterances a split, the same 50 per noisy
# condition (CASCADE_* in recipes/stages.sh); speed on `test` only; the from-scratch baseline
# trains 8 epochs (conf/student.yaml). recipes/synthetic/RESULTS.md has the measured stage times.
#
#   bash recipes/synthetic/run.sh                          # everything, size small
#   bash recipes/synthetic/run.sh --stage 4 --stop-stage 5 # retrain the students only
#   bash recipes/synthetic/run.sh --students ce,kd,ce_scratch,kd_scratch  # all four students
#   bash recipes/synthetic/run.sh --students kd_scratch --stage 5  # only the from-scratch student
#   bash recipes/synthetic/run.sh --size full --ngpu 4     # training and features under torchrun
set -euo pipefail

recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "${recipe_dir}/../common.sh"
. "${recipe_dir}/../stages.sh"

stage=0              # first stage to run
stop_stage=7         # last stage to run
size=small           # corpus size preset: tiny | small | full
seed=0               # seed of the corpus plan
engines=espeak,piper,kokoro,flite,festival  # TTS engines to use when installed
held_out_engine=piper  # engine kept out of train/valid, heard only in test_unseen_engine (none: no such split)
num_workers=0        # worker processes for synthesis (0: every core)
device=auto          # device of features, training and evaluation: auto | cpu | cuda
ngpu=1               # N > 1 runs the feature and training stages under torchrun with N processes
data_root=data       # the corpus goes to ${data_root}/synthetic_${size}
exp_dir=""           # experiment folder (default: exp/synthetic_${size})
students=ce,kd,kd_scratch  # students to train: ce, kd (--config), ce_scratch, kd_scratch (--scratch-config)
config=""            # main student config (default: conf/whisper.yaml beside this script)
scratch_config=""    # from-scratch baseline config (default: conf/student.yaml beside this script)
student_set=""       # SECTION.KEY=VALUE[,...] overrides of every student config (e.g. train.epochs=5)
teacher_config=""    # teacher config (default: conf/teacher.yaml beside this script)
distill="${DEFAULT_DISTILL}"  # stage 5 loss weights, added to the config's (ce stays on)
eval_splits=""       # comma-separated splits to evaluate (default: every split but train and valid)
noise=true           # stage 6 noise sweep (white and babble at --snrs, reverb, telephone)
snrs=20,10,0         # SNRs (dB) of the white and babble noise in the sweep
noisy_utterances=200 # students' noise sweep on a seeded subset of this many utterances a split (0: all)
python=python        # Python interpreter with slukd installed

option_names="stage stop_stage size seed engines held_out_engine num_workers device ngpu data_root exp_dir students config scratch_config student_set teacher_config distill eval_splits noise snrs noisy_utterances python"
usage="Usage: $0 [options]
The built-in synthetic corpus end to end: corpus, features, teacher, the students (a Whisper-initialised
student CE-only and distilled, a distilled from-scratch baseline), cascades, evaluation, report."
parse_options "$@"

case "${size}" in tiny|small|full) ;; *) die "--size must be tiny, small or full, got '${size}'" ;; esac
case "${noise}" in true|false) ;; *) die "--noise must be true or false, got '${noise}'" ;; esac

start_time=$(date +%s)
log "$0 $*"
data_dir="${data_root}/synthetic_${size}"
exp_dir="${exp_dir:-exp/synthetic_${size}}"
config="${config:-${recipe_dir}/conf/whisper.yaml}"
scratch_config="${scratch_config:-${recipe_dir}/conf/student.yaml}"
teacher_config="${teacher_config:-${recipe_dir}/conf/teacher.yaml}"
student_dirs  # checks --students before any stage runs

corpus_done="${data_dir}/.done"  # the built-in corpus marks its whole folder
if [ "${stage}" -le 0 ] && [ "${stop_stage}" -ge 0 ]; then
  log "Stage 0: synthesise the ${size} corpus into ${data_dir}"
  stage_started=$(date +%s)
  # Debian's engines are not Python packages: their presence is part of the stage's settings.
  debian_engines="$(command -v flite text2wave || true) $(ls /usr/share/festival/voices/*/ 2>/dev/null || true)"
  run_corpus_stage --setting "debian engines: ${debian_engines//$'\n'/ }" -- "${python}" -m data_prep.synthetic \
    --out "${data_dir}" --size "${size}" --seed "${seed}" --engines "${engines}" \
    --held-out-engine "${held_out_engine}" --num-workers "${num_workers}"
  log "Stage 0 (corpus) took $(( $(date +%s) - stage_started )) s"
fi

run_shared_stages

finish "${start_time}"
