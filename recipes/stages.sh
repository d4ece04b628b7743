#!/usr/bin/env bash
# Stages 1-7, the same for every corpus; a recipe runs its own stage 0 (the corpus into
# ${data_dir}/manifests/), then calls `run_shared_stages`.
#
#   1  log-mel features + CMVN for every split               -> ${data_dir}/fbank/<split>/
#   2  fine-tune the BERT teacher on the transcripts         -> ${exp_dir}/teacher/
#   3  export the teacher's targets (train and valid)        -> ${exp_dir}/teacher/targets/
#   4  student, cross-entropy only (Jiang et al.'s Baseline-2) -> ${exp_dir}/student_ce<tag>/
#   5  student distilled from the teacher                    -> ${exp_dir}/student_kd<tag>/
#   6  evaluate the teacher (on text) and both students (clean and noisy audio)
#                                                              -> <model>/eval/<split>.json
#   7  report: tables and figures of every model             -> ${exp_dir}/report/
#
# Reads these variables (each recipe declares them as options): stage stop_stage data_dir
# exp_dir config student_set teacher_config distill eval_splits noise device ngpu python.
# Every stage skips what is already complete (the commands check their own .done markers).

DEFAULT_DISTILL=hidden=1.0,attention=1.0  # stage 5 weights, chosen on valid by benchmarks/distill.py

student_dirs() {
  # The two students' folders, named after what configures them (as ESPnet names its
  # experiments), so runs with another config, other overrides or other distillation weights
  # never meet the checkpoints of an earlier run:
  #   default config and settings    -> student_ce, student_kd
  #   --config conf/big.yaml         -> student_ce_big, student_kd_big
  #   --student-set train.epochs=30  -> student_ce_train.epochs30, student_kd_train.epochs30
  #   --distill logits=1.0           -> student_kd_logits1.0
  local name tag="" kd_tag=""
  name=$(basename "${config}")
  name="${name%.yaml}"; name="${name%.yml}"
  [ "${name}" = "student" ] || tag="_${name}"
  [ -z "${student_set}" ] || tag="${tag}_$(echo "${student_set}" | tr -d '=' | tr ',/' '_-')"
  [ "${distill}" = "${DEFAULT_DISTILL}" ] || kd_tag="_$(echo "${distill}" | tr -d '=' | tr ',/' '_-')"
  student_ce="${exp_dir}/student_ce${tag}"
  student_kd="${exp_dir}/student_kd${tag}${kd_tag}"
}

set_flags() {
  # set_flags PREFIX "a=1,b=2" -> one word a line: --set PREFIXa=1 --set PREFIXb=2
  local item
  for item in ${2//,/ }; do
    printf -- '--set\n%s%s\n' "$1" "${item}"
  done
}

run_shared_stages() {
  local split splits model
  student_dirs

  if [ "${stage}" -le 1 ] && [ "${stop_stage}" -ge 1 ]; then
    log "Stage 1: log-mel features and CMVN for every split into ${data_dir}/fbank"
    for split in $(manifest_splits "${data_dir}/manifests"); do
      run_slukd "${data_dir}/fbank/${split}" features \
        --manifest "${data_dir}/manifests/${split}.jsonl" --out "${data_dir}/fbank/${split}" \
        --device "${device}"
    done
  fi

  if [ "${stage}" -le 2 ] && [ "${stop_stage}" -ge 2 ]; then
    log "Stage 2: fine-tune the teacher on the transcripts into ${exp_dir}/teacher"
    run_logged "${python}" -m pipeline.cli teacher train --data "${data_dir}" --out "${exp_dir}/teacher" \
      --config "${teacher_config}" --device "${device}"
    [ -f "${exp_dir}/teacher/.done" ] || die "${exp_dir}/teacher is incomplete"
  fi

  if [ "${stage}" -le 3 ] && [ "${stop_stage}" -ge 3 ]; then
    log "Stage 3: export the teacher's targets into ${exp_dir}/teacher/targets"
    run_logged "${python}" -m pipeline.cli teacher export --data "${data_dir}" --model "${exp_dir}/teacher" \
      --out "${exp_dir}/teacher/targets" --splits train,valid --device "${device}"
    [ -f "${exp_dir}/teacher/targets/.done" ] || die "${exp_dir}/teacher/targets is incomplete"
  fi

  if [ "${stage}" -le 4 ] && [ "${stop_stage}" -ge 4 ]; then
    log "Stage 4: student with cross-entropy only into ${student_ce}"
    local overrides=()
    mapfile -t overrides < <(set_flags "" "${student_set}")
    run_slukd "${student_ce}" train --data "${data_dir}/manifests" --features "${data_dir}/fbank" \
      --out "${student_ce}" --config "${config}" --set "train.device=${device}" "${overrides[@]}"
  fi

  if [ "${stage}" -le 5 ] && [ "${stop_stage}" -ge 5 ]; then
    log "Stage 5: student distilled from the teacher (${distill}) into ${student_kd}"
    local overrides=()
    mapfile -t overrides < <(set_flags "" "${student_set}"; set_flags distill. "${distill}")
    run_slukd "${student_kd}" train --data "${data_dir}/manifests" --features "${data_dir}/fbank" \
      --out "${student_kd}" --config "${config}" --teacher-targets "${exp_dir}/teacher/targets" \
      --set "train.device=${device}" "${overrides[@]}"
  fi

  if [ "${stage}" -le 6 ] && [ "${stop_stage}" -ge 6 ]; then
    splits="${eval_splits//,/ }"
    if [ -z "${splits}" ]; then
      splits=$(manifest_splits "${data_dir}/manifests")
      splits=$(echo " ${splits} " | sed -e 's/ train / /' -e 's/ valid / /')
    fi
    log "Stage 6: evaluate the teacher on text and both students on audio (${splits# }; noise: ${noise})"
    local noise_flags=()
    [ "${noise}" = true ] || noise_flags=(--no-noise)
    for split in ${splits}; do
      run_logged "${python}" -m pipeline.cli evaluate --model "${exp_dir}/teacher" --data "${data_dir}" \
        --split "${split}" --device "${device}"
      for model in "${student_ce}" "${student_kd}"; do
        run_logged "${python}" -m pipeline.cli evaluate --model "${model}" --data "${data_dir}" \
          --split "${split}" --teacher "${exp_dir}/teacher" --device "${device}" "${noise_flags[@]}"
      done
    done
  fi

  if [ "${stage}" -le 7 ] && [ "${stop_stage}" -ge 7 ]; then
    log "Stage 7: report of every model in ${exp_dir}"
    run_logged "${python}" -m pipeline.cli report "${exp_dir}"
    [ -f "${exp_dir}/report/report.md" ] || die "${exp_dir}/report is incomplete"
    log "report: ${exp_dir}/report/report.md (and report.html)"
  fi
}
