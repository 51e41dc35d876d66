#!/usr/bin/env bash
# More training phrasings on the f2 model (docs/RESULTS.md, "More training phrasings"): the
# last base run of metaworld64-latent32.sh (base-repeated: 1,500 steps from base-long) again,
# same seed and data order, with each training clip's phrasing pool doubled by the eight
# phrasings per task of training/data/metaworld_extra_phrasings.json; then stage 1 and stage 2
# on the same pools, the model folder, and the val layouts with the recorded (evaluation-only)
# and the val phrasings in both modes. Run metaworld64-latent32.sh to its base-long step first.
# Resumable like the main recipe. Usage, from the repository root:
#   THREADS=2 bash training/recipes/metaworld64-latent32-phrasings.sh
set -euo pipefail

source "$(dirname "$0")/common.sh"
STEPS=${STEPS:-"rephrase base stage1 stage2 eval"}
SOURCE=runs/metaworld64v
RUNS=runs/latent32
TIMES=$RUNS/times.tsv
MANIFEST=$SOURCE/data/manifest-phr16.jsonl
BASE=$RUNS/base-phr/final/model
MODEL=$RUNS/model-phr
DATA="--set data.manifest=$MANIFEST"

if wants rephrase && [ ! -f "$MANIFEST" ]; then
  $PY -m training.data.cli rephrase --manifest "$SOURCE/data/manifest.jsonl" --out "$MANIFEST" \
    --extra-phrasings
fi
if wants base && [ ! -f "$BASE/model_index.json" ]; then
  timed base-phr $RUN $TRAIN base --config training/configs/metaworld64v-base.yaml --resume \
    --set output_dir=$RUNS/base-phr --set model.folder=$RUNS/base-long/final/model \
    --set max_steps=1500 --set video_concat=0.0 --set sampler.concat_layout=repeated $DATA
fi
if wants stage1 && [ ! -d "$RUNS/stage1-phr/final/adapters/manipulation" ]; then
  timed stage1-phr $RUN $TRAIN stage1 --config training/configs/metaworld64v-stage1.yaml --resume \
    --set output_dir=$RUNS/stage1-phr --set model.folder=$BASE $DATA
fi
if wants stage2 && [ ! -d "$RUNS/stage2-phr/final/adapters/prediction" ]; then
  timed stage2-phr $RUN $TRAIN stage2 --config training/configs/metaworld64v-stage2.yaml --resume \
    --set output_dir=$RUNS/stage2-phr --set model.folder=$BASE $DATA \
    --set model.manipulation_adapter=$RUNS/stage1-phr/final/adapters/manipulation
fi
if wants eval; then
  mkdir -p "$RUNS/eval/phr16"
  [ -f "$MODEL/mode_adapters.json" ] || assemble_model_folder "$RUNS" "$BASE" -phr
  for mode in image video; do
    for phrasings in recorded val; do
      out=$RUNS/eval/phr16/$mode-val-$phrasings.json
      [ -f "$out" ] && continue
      timed "eval-$mode-val-$phrasings-phr16" $RUN $PY -m training.evaluate --model "$MODEL" \
        --manifest "$SOURCE/val/manifest.jsonl" --split val --phrasings "$phrasings" \
        --mode "$mode" --off-arm --workers 1 --out "$out"
    done
  done
fi
