#!/usr/bin/env bash
# Ablations and the motion-reward sweep of the Meta-World video model (issue 12), on top of the
# finished runs of training/recipes/metaworld64v.sh (base, decoder, stage1, flow, stage2 with the
# paper's motion weight 1e-3). Every stage-2 run here starts from the same base, seed and data
# order as that run and differs in one setting only:
#   motion-0, motion-1e-3, motion-1e-2, motion-1e-1, motion-1
#                 the motion-reward weight (0: no motion reward; 1e-3, the paper's, repeats the
#                 main run at this recipe's thread count, so that every run here is comparable)
#   no-stage1     stage 2 without the stage-1 adapter
# Then each is evaluated in video mode on the val split (settings are chosen there, never on the
# held-out layouts), with the base model alone (image and video mode) as a further row, and
# the prediction adapters are compared with the motion-0 run's (relative change of the
# effective weight update). Resumable like the main recipe. docs/RESULTS.md reads the results.
#   bash training/recipes/metaworld64v-ablations.sh
#   STEPS="train" bash training/recipes/metaworld64v-ablations.sh
#   ONLY="motion-0 no-stage1" bash training/recipes/metaworld64v-ablations.sh   # some rows only
#   (rows: base and the names below)
set -euo pipefail

source "$(dirname "$0")/common.sh"
STEPS=${STEPS:-"train eval compare"}
RUNS=runs/metaworld64v
OUT=$RUNS/ablations
CONFIG=training/configs/metaworld64v-stage2.yaml
mkdir -p "$OUT"
TIMES=$OUT/times.tsv

# name:override pairs; the stage-1 adapter stays unless the override removes it
RUNS_LIST="motion-0:motion.weight=0 motion-1e-3:motion.weight=1e-3 motion-1e-2:motion.weight=1e-2
motion-1e-1:motion.weight=1e-1 motion-1:motion.weight=1 no-stage1:model.manipulation_adapter=null"
chosen() { [ -z "${ONLY:-}" ] || [[ " $ONLY " == *" $1 "* ]]; }

if wants train; then
  for item in $RUNS_LIST; do
    IFS=: read -r name override <<< "$item"
    chosen "$name" || continue
    [ -d "$OUT/$name/final/adapters/prediction" ] && continue
    timed "train-$name" $RUN $TRAIN stage2 --config "$CONFIG" --set "$override" \
      --output-dir "$OUT/$name" --resume
  done
fi

if wants eval; then
  # the base model alone (refined decoder, no adapter), image and video mode
  if chosen base; then
    model=$OUT/models/base
    for mode in image video; do
      [ -f "$OUT/eval/$mode-val-base.json" ] && continue
      if [ ! -f "$model/model_index.json" ]; then
        mkdir -p "$OUT/models"
        cp -r "$RUNS/base/final/model" "$model"
        cp "$RUNS/vae_decoder/diffusion_pytorch_model.safetensors" "$model/vae/"
      fi
      timed "eval-base-$mode" $RUN $PY -m training.evaluate --model "$model" \
        --manifest "$RUNS/val/manifest.jsonl" --split val --phrasings recorded --mode "$mode" \
        --off-arm --workers 2 --out "$OUT/eval/$mode-val-base.json"
    done
  fi
  for item in $RUNS_LIST; do
    IFS=: read -r name override <<< "$item"
    chosen "$name" || continue
    [ -f "$OUT/eval/video-val-$name.json" ] && continue
    model=$OUT/models/$name
    rm -rf "$model"
    mkdir -p "$OUT/models"
    cp -r "$RUNS/base/final/model" "$model"
    cp "$RUNS/vae_decoder/diffusion_pytorch_model.safetensors" "$model/vae/"
    mkdir -p "$model/adapters"
    cp -r "$OUT/$name/final/adapters/prediction" "$model/adapters/"
    [ "$name" != no-stage1 ] && cp -r "$RUNS/stage1/final/adapters/manipulation" "$model/adapters/"
    timed "eval-$name" $RUN $PY -m training.evaluate --model "$model" \
      --manifest "$RUNS/val/manifest.jsonl" --split val --phrasings recorded --mode video \
      --off-arm --workers 2 --out "$OUT/eval/video-val-$name.json"
  done
fi

if wants compare; then
  $PY -m training.adapter_change "$OUT/motion-0/final/adapters/prediction" \
    "$OUT"/motion-1e-{3,2,1}/final/adapters/prediction "$OUT/motion-1/final/adapters/prediction" \
    "$RUNS/stage2/final/adapters/prediction" | tee "$OUT/adapter_change.md"
fi
