#!/bin/bash
# One suite row with another student (issue 12's student-size curve; bench/student_curve.py reads the reports).
#   bench/student_row.sh RUNS ROW NAME KEY=VALUE...
#   e.g. bench/student_row.sh runs/curve mr-smollm2 oracle 'models.small="smollm2-135m"' distill.enabled=false
#        bench/student_row.sh runs/curve mr-smollm2 blocks10 'distill.blocks=[0, 1, 2, 3, 4, -5, -4, -3, -2, -1]'
# Runs `post bench --suite offline --row ROW` at 1 thread with the overrides into RUNS/NAME and writes
# bench/results/student-curve/NAME-ROW.json (the row's report). Add --set runtime.seed=N as KEY=VALUE
# runtime.seed=N. Resumable: run it again after an interruption.
set -e
RUNS=$1; ROW=$2; NAME=$3; shift 3
SETS=(); for s in "$@"; do SETS+=(--set "$s"); done
TMP=$RUNS/$NAME/results
post bench --suite offline --out "$RUNS/$NAME" --set runtime.threads=1 "${SETS[@]}" --results "$TMP" --row "$ROW"
mkdir -p bench/results/student-curve
cp "$TMP/$ROW.json" "bench/results/student-curve/.$NAME-$ROW.json.tmp"
mv "bench/results/student-curve/.$NAME-$ROW.json.tmp" "bench/results/student-curve/$NAME-$ROW.json"  # atomic
