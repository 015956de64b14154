#!/bin/bash
# A student lever on a finished suite row's task: distill, tune and transfer anew with the row's config
# plus the lever, then score every method on validation (issue 12's ablation, item 1).
#   bench/student_lever.sh SUITE_OUT ROW NAME "lever text" KEY=VALUE...
#   e.g. bench/student_lever.sh runs/suite bbc-smollm2 blocks6-bbc "distill.blocks = [0, 1, 2, -3, -2, -1]" \
#        'distill.blocks=[0, 1, 2, -3, -2, -1]'
# SUITE_OUT "-": ROW is a preset (e.g. `bench/student_lever.sh - demo kd600-lr2e3 "..." distill.steps=600`).
# Writes runs/levers/NAME (a new run folder: no full PT) and bench/results/ablation/NAME.json.
# Resumable: run it again after an interruption (each stage resumes from its checkpoint).
set -e
OUT=$1; ROW=$2; NAME=$3; LEVER=$4; shift 4
R=${LEVERS:-runs/levers}/$NAME
METHODS='transfer.methods=["post","direct","inference"]'
SETS=(--set runtime.threads=1 --set eval.full_pt=false --set "$METHODS"); for s in "$@"; do SETS+=(--set "$s"); done
BASE=(--config "$OUT/$ROW/config.toml"); if [ "$OUT" = "-" ]; then BASE=(--preset "$ROW"); fi
post distill "${BASE[@]}" "${SETS[@]}" --out "$R"   # into the same folder again: resumes
post tune "$R" "${SETS[@]}"
post transfer "$R" "${SETS[@]}"
python bench/ablation.py "$R" --name "$NAME" --lever "$LEVER ($ROW's task, otherwise its defaults)" --threads 1 \
  --set task.max_eval=300 --set "$METHODS" \
  --command "bench/student_lever.sh $OUT $ROW $NAME '$LEVER' $*"
