#!/bin/bash
# A transfer lever on a finished suite row's student and prompt, scored on validation (issue 12).
#   bench/transfer_lever.sh SUITE_OUT ROW NAME "lever text" KEY=VALUE...
#   e.g. bench/transfer_lever.sh runs/suite mr-smollm2 alpha1-mr "transfer.alpha = 1" transfer.alpha=1.0
# Copies SUITE_OUT/ROW once to runs/levers/NAME (student, tune, package kept; transfer and eval dropped),
# trains only POST with the lever, then writes bench/results/ablation/NAME.json (validation accuracies).
# METHODS (environment): the methods to train, default ["post"]; '["post","output","shift"]' with
# transfer.alpha="select" keeps the row's α choice. Resumable: run it again after an interruption.
set -e
M=${METHODS:-'["post"]'}
OUT=$1; ROW=$2; NAME=$3; LEVER=$4; shift 4
R=${LEVERS:-runs/levers}/$NAME
if [ ! -d "$R" ]; then mkdir -p "$(dirname "$R")"; cp -r "$OUT/$ROW" "$R"; rm -rf "$R/transfer" "$R/eval" "$R/results.json" "$R/diagnostics.json"; fi
SETS=(); for s in "$@"; do SETS+=(--set "$s"); done
python bench/compare_public.py "$R" "$@"   # a public set the lever names: compared with the private data first
post transfer "$R" --set runtime.threads=1 --set "transfer.methods=$M" "${SETS[@]}"
python bench/ablation.py "$R" --name "$NAME" --lever "$LEVER ($ROW's student and prompt)" --threads 1 \
  --set task.max_eval=300 --set "transfer.methods=$M" "${SETS[@]}" \
  --command "bench/transfer_lever.sh $OUT $ROW $NAME '$LEVER' $*"
