#!/usr/bin/env bash
# Your own commands from text alone: a grammar file in, a speech model out, with nothing recorded
# and nothing downloaded (docs/grammar.md describes the formats). `make run` is this recipe on
# conf/fsc.yaml, the FSC grammar (the built-in corpus).
#
# Stages (each one is skipped, without starting Python, when it is done with the same settings):
#   0  synthesise the corpus from --grammar with every installed TTS engine, one engine held out
#      (test_unseen_engine), and add the --eval-csv recordings as splits of their own
#                                                            -> ${data_dir}/manifests/
#      and what is not a command (--ood SIZE, default --size; none: skip): other domains, generic
#      sentences, near misses of the grammar, non-speech (data_prep.ood); then the corpus that
#      stages 1-8 read: the corpus and ood_test for the open-set evaluation (--outlier-exposure
#      true: train and valid also get ood_train and ood_valid as intent `unknown`)                           -> ${data_dir}/ood/, ${data_dir}/openset/manifests/
#   1  the students' training folder (train + train_rest)  -> ${data_dir}/openset/full/manifests/
#      and fbank features + CMVN, only when a chosen student reads them (the from-scratch one)
#                                                            -> ${data_dir}/openset/full/fbank/<split>/
#   2  fine-tune the BERT teacher on the transcripts         -> ${exp_dir}/teacher/
#   3  export the teacher's targets                          -> ${exp_dir}/teacher/targets/
#   4  the main student with cross-entropy only             -> ${exp_dir}/student_ce/
#   5  the main student distilled from the teacher (the model to deploy) -> ${exp_dir}/student_kd/
#      and the same trained without the held-out phrasings  -> ${exp_dir}/student_kd_held_out/
#      and the from-scratch baseline, distilled the same way -> ${exp_dir}/student_kd_scratch/
#   6  the cascade baselines (Whisper tiny.en ASR + teacher) -> ${exp_dir}/cascade*/; evaluate
#      every model on every split but train and valid (test, test_unseen_phrasing,
#      test_unseen_engine, and each --eval-csv split: students only when it has no transcripts;
#      ood_test: the open-set evaluation of the teacher, the students and the first cascade)
#                                                            -> <model>/eval/<split>.json
#   7  report                                                -> ${exp_dir}/report/report.{md,html}
#   8  int8 ONNX export of the main student, checked against PyTorch on test utterances
#                                                            -> ${exp_dir}/student_kd/model.int8.onnx
#
# The students (--students picks which; --config / --scratch-config their configs):
#   ce, kd       conf/whisper.yaml: Whisper tiny.en's pretrained encoder (top 2 layers fine-tuned), one new layer,
#                trained on clean audio plus 2 augmented copies in the frozen-encoder cache (speed,
#                pitch, rooms, noise, microphones, telephone): made for people in real rooms
#   ce_scratch, kd_scratch  conf/student.yaml: the from-scratch transformer, with VTLP
# These train on train + train_rest (${data_dir}/openset/full/: train_rest is the grammar's
# held-out expression shapes and slot-value combinations said by training voices, in texts no
# other split says), because people say every expression of the grammar. Valid and the test
# splits keep their held-out phrasings, whose texts the students never heard:
#   kd_held_out  kd on train alone: the one that never heard a held-out expression, so its
#                valid and test_unseen_phrasing say how wording never taught is read
#
# Recordings of your own, never trained on: --eval-csv NAME=FILE.csv (columns audio, intent,
# slot:NAME..., transcript optional; see `python -m data_prep.csv_manifest --help`).
#
#   bash recipes/grammar/run.sh --grammar recipes/grammar/conf/kitchen.yaml --size small
#   bash recipes/grammar/run.sh --grammar my_commands.yaml --eval-csv mine=recordings.csv
#   bash recipes/grammar/run.sh --stage 4 --stop-stage 5   # retrain the students only
set -euo pipefail

recipe_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
. "${recipe_dir}/../common.sh"
. "${recipe_dir}/../stages.sh"

stage=0              # first stage to run
stop_stage=8         # last stage to run
grammar="${recipe_dir}/conf/fsc.yaml"  # grammar file: Home Assistant intents, Rhino context, or a house description
size=small           # corpus size preset: tiny | small | full
seed=0               # seed of the corpus plan (sentences and speakers)
engines=espeak,piper,kokoro,flite,festival  # TTS engines to use when installed (every voice of each, up to the size's cap)
held_out_engine=piper  # engine kept out of train/valid, heard only in test_unseen_engine (none: no such split)
eval_csv=""          # NAME=FILE.csv[,NAME=FILE.csv...]: recordings added as split NAME, evaluated, never trained on
ood=""               # out-of-domain corpus size (other domains, generic text, near misses, non-speech): tiny | small | full | none (default: --size)
outlier_exposure=false  # true: also train on ood_train as intent `unknown` (off by measurement: it answered `unknown` to 29 of 620 commands of the unseen engine; docs/results.md)
num_workers=0        # worker processes for synthesis (0: every core)
device=auto          # device of features, training and evaluation: auto | cpu | cuda
ngpu=1               # N > 1 runs the feature and training stages under torchrun with N processes
data_dir=""          # the corpus (default: data/grammar_<grammar name>_<size>)
exp_dir=""           # experiment folder (default: exp/grammar_<grammar name>_<size>)
students=ce,kd,kd_scratch,kd_held_out  # students to train: ce, kd, kd_held_out (--config), ce_scratch, kd_scratch (--scratch-config)
config=""            # main student config (default: conf/whisper.yaml beside this script)
scratch_config=""    # from-scratch baseline config (default: conf/student.yaml beside this script)
student_set=""       # SECTION.KEY=VALUE[,...] overrides of every student config (e.g. train.epochs=5)
teacher_config=""    # teacher config (default: conf/teacher.yaml beside this script)
distill="${DEFAULT_DISTILL}"  # stage 5 loss weights, added to the config's (ce stays on)
eval_splits=""       # comma-separated splits to evaluate (default: every split but train and valid)
calibrate_noise=""   # noises valid is also heard in when each student's rejection threshold is chosen (of white, pink, household, babble; empty: clean valid only)
calibrate_snrs=24,12 # their SNRs (dB, on the loudest 25 ms frame)
noise=true           # stage 6 noise sweep (white and babble at --snrs, reverb, telephone)
snrs=20,10,0         # SNRs (dB) of the white and babble noise in the sweep
noisy_utterances=200 # students' noise sweep on a seeded subset of this many utterances a split (0: all)
export_utterances=20 # stage 8: test utterances the int8 model is checked on against PyTorch
python=python        # Python interpreter with slukd installed

option_names="stage stop_stage grammar size seed engines held_out_engine eval_csv ood outlier_exposure num_workers device ngpu data_dir exp_dir students config scratch_config student_set teacher_config distill calibrate_noise calibrate_snrs eval_splits noise snrs noisy_utterances export_utterances python"
usage="Usage: $0 --grammar FILE [--size tiny|small|full] [--data-dir DIR] [--exp-dir DIR] [--eval-csv NAME=FILE.csv] [options]
A spoken-command model from a grammar file: a TTS corpus, features, teacher, students, cascades,
evaluation, report and the int8 ONNX export of the main student."
parse_options "$@"

case "${size}" in tiny|small|full) ;; *) die "--size must be tiny, small or full, got '${size}'" ;; esac
case "${noise}" in true|false) ;; *) die "--noise must be true or false, got '${noise}'" ;; esac
ood="${ood:-${size}}"
case "${ood}" in tiny|small|full|none) ;; *) die "--ood must be tiny, small, full or none, got '${ood}'" ;; esac
case "${outlier_exposure}" in true|false) ;; *) die "--outlier-exposure must be true or false, got '${outlier_exposure}'" ;; esac
[ -e "${grammar}" ] || die "--grammar: no such file: ${grammar}"

start_time=$(date +%s)
log "$0 $*"
grammar_name=$(basename "${grammar}"); grammar_name="${grammar_name%.yaml}"; grammar_name="${grammar_name%.yml}"
data_dir="${data_dir:-data/grammar_${grammar_name}_${size}}"
exp_dir="${exp_dir:-exp/grammar_${grammar_name}_${size}}"
config="${config:-${recipe_dir}/conf/whisper.yaml}"
scratch_config="${scratch_config:-${recipe_dir}/conf/student.yaml}"
teacher_config="${teacher_config:-${recipe_dir}/conf/teacher.yaml}"
student_dirs  # checks --students before any stage runs

grammar_inputs() {
  # --input flags for the grammar: the file, or every YAML file of a house folder.
  local path
  if [ -d "${grammar}" ]; then
    for path in "${grammar}"/*.yaml; do [ -f "${path}" ] && printf -- '--input\n%s\n' "${path}"; done
  fi
  return 0
}

stage_corpus() {
  # Debian's engines are not Python packages: their presence is part of the stage's settings.
  local debian_engines item name path inputs=()
  debian_engines="$(command -v flite text2wave || true) $(ls /usr/share/festival/voices/*/ 2>/dev/null || true)"
  mapfile -t inputs < <(grammar_inputs)
  run_corpus_stage --setting "debian engines: ${debian_engines//$'\n'/ }" "${inputs[@]}" -- \
    "${python}" -m data_prep.synthetic --out "${data_dir}" --grammar "${grammar}" --size "${size}" \
    --seed "${seed}" --engines "${engines}" --held-out-engine "${held_out_engine}" --num-workers "${num_workers}"
  for item in ${eval_csv//,/ }; do
    name="${item%%=*}" path="${item#*=}"
    [ "${name}" != "${item}" ] && [ -n "${name}" ] || die "--eval-csv: expected NAME=FILE.csv, got '${item}'"
    run_step "${data_dir}/manifests/${name}.jsonl" "${data_dir}/manifests/.${name}${RECIPE_MARKER}" \
      --input "$(corpus_marker)" --input "${path}" -- \
      "${python}" -m data_prep.csv_manifest --out "${data_dir}" --eval-csv "${name}=${path}"
  done
}

stage_out_of_domain() {
  # What the model must answer `unknown` to, from text and noise alone (data_prep.ood): near misses
  # made from the corpus's train transcripts, ood_test of held-out kinds, sources and voices. Then
  # the corpus the later stages read (${train_dir}): with outlier exposure, train and valid gain
  # ood_train and ood_valid as intent `unknown`; without it, the ood splits only join the others.
  [ "${ood}" != none ] || return 0
  # Without outlier exposure nothing trains on ood_train or ood_valid: ood_test alone is synthesised
  # (the same texts, voices and sounds as in a full build: the plan is the whole plan).
  local ood_splits=ood_test
  [ "${outlier_exposure}" = false ] || ood_splits=ood_train,ood_valid,ood_test
  run_step "${ood_dir}/.done" "${ood_dir}/${RECIPE_MARKER}" --input "${corpus_done}" -- \
    "${python}" -m data_prep.ood --out "${ood_dir}" --size "${ood}" --seed "${seed}" --engines "${engines}" \
    --held-out-engine "${held_out_engine}" --num-workers "${num_workers}" --splits "${ood_splits}" \
    --in-domain "${data_dir}/manifests/train.jsonl"
  local inputs=() path
  for path in "${data_dir}"/manifests/*.jsonl; do inputs+=(--input "${path}"); done
  run_step "${train_dir}/manifests/labels.json" "${train_dir}/manifests/${RECIPE_MARKER}" \
    --input "${ood_dir}/.done" "${inputs[@]}" -- \
    "${python}" -m data_prep.ood.mix --corpus "${data_dir}" --ood "${ood_dir}" --out "${train_dir}" \
    --mix "${outlier_exposure}"
}

export_model() {
  # The main student: the distilled one when it is chosen, else the first chosen.
  local index
  for index in "${!student_roles[@]}"; do
    [ "${student_roles[index]}" != kd ] || { echo "${student_models[index]}"; return 0; }
  done
  echo "${student_models[0]:-}"
}

stage_export() {
  local model
  model=$(export_model)
  [ -n "${model}" ] || { log "no student chosen: nothing to export"; return 0; }
  run_step "${model}/model.int8.onnx" "${model}/.export${RECIPE_MARKER}" --input "${model}/.done" -- \
    "${python}" -m pipeline.cli export --model "${model}" --int8 \
    --verify "${data_dir}/manifests/test.jsonl" --max-verify-files "${export_utterances}"
  log "deployable model: ${model}/model.int8.onnx (slukd predict --model ${model}/model.int8.onnx FILE.wav)"
}

corpus_done="${data_dir}/.done"  # the synthesised corpus marks its whole folder
ood_dir="${data_dir}/ood"
train_dir="${data_dir}/openset"  # the corpus with the ood splits (stage 0b), which stages 1-8 read
run_stage 0 "synthesise the ${size} corpus of ${grammar} into ${data_dir}" stage_corpus
run_stage 0 "out-of-domain corpus (${ood}) into ${ood_dir}, outlier exposure: ${outlier_exposure}" stage_out_of_domain
if [ "${ood}" != none ]; then
  data_dir="${train_dir}" corpus_done="${train_dir}/manifests/labels.json"
fi
run_shared_stages
run_stage 8 "int8 ONNX export of the main student" stage_export

finish "${start_time}"
