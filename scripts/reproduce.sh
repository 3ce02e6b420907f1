#!/usr/bin/env bash
# The full-budget reproduction (docs/RESULTS.md): five datasets, three models, then the report.
#
# One pipeline per (dataset, model, origin); each step resumes from its output, so an interrupted
# run is resumed by running the same command again:
#   ml-1m   SASRec trained by PopSteer, the authors' SASRec (imported), LightGCN (real-user probe),
#           and the best SAE of a K x s sweep through the platform (sweeps/reproduce_ml1m.yaml)
#   lastfm  SASRec trained by PopSteer, the authors' SASRec (imported)
#   beauty, sports (sequence files, imported)   SASRec and GRU4Rec trained by PopSteer
# Recommenders train for at most REC_MIN minutes (the best ML-1M recipe of bench/sasrec_ml1m.py for
# SASRec); every SAE is K=32, s=64 trained to the reference's rule (up to 300 epochs, early stopping
# with patience 20 that never fires before epoch 50). The wall time of every step that ran is appended
# to $OUT/walltimes.tsv (step, seconds, finished at).
#
# Runs go to $OUT (POPSTEER_RUNS, default ~/popsteer-runs/reproduce: outside the checkout, so a fresh
# checkout keeps them). Each pipeline ends with its own report section in
# $SECTIONS/<dataset>-<model>-<origin>/ (default docs/results: commit it as soon as it is written); a
# pipeline whose section is already there is skipped, so after a lost run folder only the sections not
# yet committed run again. docs/RESULTS.md is then assembled from the sections.
#
#   POPSTEER_SHARED_DATASETS=../shared/datasets bash scripts/reproduce.sh
#   PIPELINES="lastfm:sasrec:ours" SAE_MIN=5 bash scripts/reproduce.sh   # one pipeline, a shorter SAE
#   REPORT=none ...                                                       # the runs only, no report
#   REPORT_ARGS="--mlflow" ...                                            # and log each section to MLflow
#   SWEEP_ARGS="--set search.k=[32]" ...                                  # extra arguments of the sweep
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=$(realpath "${POPSTEER_SHARED_DATASETS:-../shared/datasets}")
OUT=${OUT:-${POPSTEER_RUNS:-$HOME/popsteer-runs/reproduce}}  # outside the checkout: it outlives a fresh checkout
PIPELINES=${PIPELINES:-"lastfm:sasrec:ours lastfm:sasrec:authors ml-1m:sasrec:authors ml-1m:sasrec:ours
  beauty:sasrec:ours beauty:gru4rec:ours sports:sasrec:ours sports:gru4rec:ours ml-1m:lightgcn:ours
  ml-1m:sasrec:sweep"}
REC_MIN=${REC_MIN:-${SASREC_MIN:-30}}
SAE_ARGS=${SAE_MIN:+--time-budget-min $SAE_MIN}
REPORT=${REPORT:-docs/RESULTS.md}
SECTIONS=${SECTIONS:-docs/results}
PS=${PS:-.venv/bin/popsteer}
PY=${PY:-.venv/bin/python}
DATA="$OUT/data"
mkdir -p "$OUT/reports"

timed() {  # timed STEP CMD...: run CMD, then append "STEP <tab> seconds <tab> finished at" to walltimes.tsv
  local step=$1 t0
  shift
  t0=$(date +%s)
  "$@"
  printf '%s\t%s\t%s\n' "$step" "$(($(date +%s) - t0))" "$(date -Iseconds)" >>"$OUT/walltimes.tsv"
}
newest() { ls -t "$1"/$2 2>/dev/null | head -1 || true; }
class_of() { case $1 in sasrec) echo SASRec ;; gru4rec) echo GRU4Rec ;; lightgcn) echo LightGCN ;;
  *) echo "error: unknown model '$1' in PIPELINES" >&2; exit 2 ;; esac; }

prepare_data() {  # the dataset's atomic file (and titles) under $DATA/<ds>/
  local ds=$1 src
  mkdir -p "$DATA/$ds"
  case $ds in
    beauty | sports)
      src="$SHARED/$ds/$( [ "$ds" = beauty ] && echo Beauty.txt.gz || echo Sports_and_Outdoors.txt.gz)"
      [ -f "$src" ] || { echo "error: $src not found (set POPSTEER_SHARED_DATASETS)" >&2; exit 2; }
      [ -f "$DATA/$ds/$ds.inter" ] || timed "$ds/import" $PS data import "$src" --name "$ds" --data-dir "$DATA"
      return ;;
    ml-1m) src="$SHARED/ml-1m/ml-1m.5core.inter.gz" ;;
    *) src="$SHARED/$ds/$ds.inter.gz" ;;
  esac
  [ -f "$src" ] || { echo "error: $src not found (set POPSTEER_SHARED_DATASETS)" >&2; exit 2; }
  ln -sf "$src" "$DATA/$ds/$ds.inter.gz"
  for f in "$SHARED/$ds/$ds.item" "$SHARED/$ds/reference/popsteer_$ds.item"; do
    if [ -f "$f" ]; then ln -sf "$f" "$DATA/$ds/$ds.item"; break; fi
  done
}

recommender() {  # recommender DS MODEL ORIGIN DIR: the base checkpoint's path (trained or imported once)
  local ds=$1 model=$2 origin=$3 dir=$4 cls rec
  cls=$(class_of "$model")
  rec=$(newest "$dir" "$cls-*-$ds.safetensors")
  if [ -z "$rec" ]; then
    if [ "$origin" = authors ]; then
      timed "$ds:$model:$origin/recommender" $PS import-checkpoint "$(ls "$SHARED/$ds"/reference/SASRec-*.pth | head -1)" \
        --dataset "$ds" --trust-pickle --data-dir "$DATA" --reference-dir "$SHARED/$ds/reference" \
        --out "$dir/SASRec-authors-$ds.safetensors" >&2
    else
      local args=(--learning-rate 0.002 --batch-size 2048 --lr-schedule cosine)
      [ "$model" = sasrec ] || args=(--learning-rate "$([ "$model" = lightgcn ] && echo 0.01 || echo 0.001)")
      timed "$ds:$model:$origin/recommender" $PS train-recommender --dataset "$ds" --model "$model" --data-dir "$DATA" \
        --out-dir "$dir" --time-budget-min "$REC_MIN" "${args[@]}" >&2
    fi
    rec=$(newest "$dir" "$cls-*-$ds.safetensors")
  fi
  echo "$rec"
}

sweep_sae() {  # the best SAE of the ML-1M K x s sweep on the platform, on our ML-1M SASRec
  local base=$1 storage="$OUT/sweeps" summary
  summary="$storage/reproduce_ml1m/sweep_summary.json"
  [ -f "$summary" ] || POPSTEER_ALLOWED_ROOTS="$SHARED" timed "ml-1m:sasrec:sweep/sweep" $PY -m popsteer.sweep \
    sweeps/reproduce_ml1m.yaml \
    --set "base_checkpoint=$base" --set "data_dir=$DATA" --set "storage=$storage" ${SWEEP_ARGS:-} >&2
  $PY -c 'import json, sys; s = json.load(open(sys.argv[1])); print(s["analysis"][s["sweep"]["selected"][0]]["sae_checkpoint"])' \
    "$summary"
}

for p in $PIPELINES; do
  IFS=: read -r ds model origin <<<"$p"
  slug="$ds-$model-$([ "$origin" = sweep ] && echo sweep-reproduce_ml1m || echo "$origin")"
  if [ -f "$SECTIONS/$slug/section.json" ]; then
    echo "reproduce: $slug: section already in $SECTIONS, skipped" >&2
    continue
  fi
  prepare_data "$ds"
  if [ "$origin" = sweep ]; then
    sae=$(sweep_sae "$(recommender "$ds" "$model" ours "$OUT/$ds-$model-ours")")
  else
    dir="$OUT/$ds-$model-$origin"
    mkdir -p "$dir"
    rec=$(recommender "$ds" "$model" "$origin" "$dir")
    sae=$(newest "$dir" "$(class_of "$model")_SAE-*-k32-64-$ds.safetensors")
    if [ -z "$sae" ]; then
      timed "$p/sae" $PS train-sae -p "$rec" --top_k 32 --scale 64 $SAE_ARGS --data-dir "$DATA" --out-dir "$dir"
      sae=$(newest "$dir" "$(class_of "$model")_SAE-*-k32-64-$ds.safetensors")
    fi
  fi
  [ -f "$DATA/$ds/analysis/$(basename "$sae" .safetensors)/analysis.json" ] ||
    timed "$p/analysis" $PS analyze -p "$sae" --data-dir "$DATA"
  # the neuron browser, and neuron_labels.csv (concept labels from item metadata) that the section's neuron table shows
  [ -f "$DATA/$ds/analysis/$(basename "$sae" .safetensors)/neuron_labels.csv" ] ||
    timed "$p/browse" $PS browse -p "$sae" --out "$OUT/browse/$slug" --data-dir "$DATA"
  [ "$REPORT" = none ] || timed "$p/report" $PS report -p "$sae" --out "$OUT/reports/$slug.md" --sections "$SECTIONS" \
    --walltimes "$OUT/walltimes.tsv" --shared-dir "$SHARED" --data-dir "$DATA" ${REPORT_ARGS:-}
done
[ "$REPORT" = none ] || $PS report --assemble "$SECTIONS" --out "$REPORT"
