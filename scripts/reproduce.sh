#!/usr/bin/env bash
# The paper's reproduction runs (ML-1M and the authors' Last.fm), then the report.
#
# For each dataset, two pipelines whose only difference is where SASRec comes from:
#   ours:    SASRec trained by PopSteer (all-position trainer, time budget SASREC_MIN minutes)
#   authors: the authors' RecBole checkpoint, imported (explicit --trust-pickle: their .pth is a pickle)
# then the SAE (K=32, s=64, time budget SAE_MIN minutes), the neuron analysis (kept per SAE
# under $OUT/data/<dataset>/analysis/), and one report with a section per pipeline.
# Each step is skipped when its output exists, so an interrupted run resumes.
#
#   POPSTEER_SHARED_DATASETS=../shared/datasets bash scripts/reproduce.sh
#   DATASETS="lastfm" SAE_MIN=5 bash scripts/reproduce.sh      # one dataset, shorter
#   REPORT=none ...                                             # the runs only, no report
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=$(realpath "${POPSTEER_SHARED_DATASETS:-../shared/datasets}")
OUT=${OUT:-runs/reproduce}
DATASETS=${DATASETS:-"ml-1m lastfm"}
SASREC_MIN=${SASREC_MIN:-30}
SAE_MIN=${SAE_MIN:-30}
REPORT=${REPORT:-docs/RESULTS.md}
PS=${PS:-.venv/bin/popsteer}
DATA="$OUT/data"

inter_file() {  # the 5-core atomic file of a dataset in the shared folder
  case $1 in
    ml-1m) echo "$SHARED/ml-1m/ml-1m.5core.inter.gz" ;;
    *) echo "$SHARED/$1/$1.inter.gz" ;;
  esac
}
newest() { ls -t "$1"/$2 2>/dev/null | head -1 || true; }

saes=()
for ds in $DATASETS; do
  src=$(inter_file "$ds")
  [ -f "$src" ] || { echo "error: $src not found (set POPSTEER_SHARED_DATASETS)" >&2; exit 2; }
  mkdir -p "$DATA/$ds"
  ln -sf "$src" "$DATA/$ds/$ds.inter.gz"
  for f in "$SHARED/$ds/$ds.item" "$SHARED/$ds/reference/popsteer_$ds.item"; do
    if [ -f "$f" ]; then ln -sf "$f" "$DATA/$ds/$ds.item"; break; fi
  done
  for who in ours authors; do
    ckpt="$OUT/$who/checkpoints"
    mkdir -p "$ckpt"
    rec=$(newest "$ckpt" "SASRec-*-$ds.safetensors")
    if [ -z "$rec" ]; then
      if [ $who = ours ]; then
        $PS train-recommender --dataset "$ds" --data-dir "$DATA" --out-dir "$ckpt" \
          --learning-rate 0.002 --batch-size 2048 --time-budget-min "$SASREC_MIN"
      else
        $PS import-checkpoint "$(ls "$SHARED/$ds"/reference/SASRec-*.pth | head -1)" --dataset "$ds" \
          --trust-pickle --data-dir "$DATA" --reference-dir "$SHARED/$ds/reference" \
          --out "$ckpt/SASRec-authors-$ds.safetensors"
      fi
      rec=$(newest "$ckpt" "SASRec-*-$ds.safetensors")
    fi
    sae=$(newest "$ckpt" "SASRec_SAE-*-k32-64-$ds.safetensors")
    if [ -z "$sae" ]; then
      $PS train-sae -p "$rec" --top_k 32 --scale 64 --time-budget-min "$SAE_MIN" --data-dir "$DATA" --out-dir "$ckpt"
      sae=$(newest "$ckpt" "SASRec_SAE-*-k32-64-$ds.safetensors")
    fi
    [ -f "$DATA/$ds/analysis/$(basename "$sae" .safetensors)/analysis.json" ] || $PS analyze -p "$sae" --data-dir "$DATA"
    saes+=(-p "$sae")
  done
done
[ "$REPORT" = none ] || $PS report "${saes[@]}" --out "$REPORT" --shared-dir "$SHARED" --data-dir "$DATA" ${REPORT_ARGS:-}
