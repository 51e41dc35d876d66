#!/usr/bin/env bash
# Meta-World video model (issue 12): a base image-to-video model trained on whole 8-frame clips
# with video mode's conditioning, then stage 1 and stage 2 on top, from scratch on a 2-core CPU.
# Every step is resumable: run the script again after an interruption and finished steps are
# skipped, training steps continue from their newest checkpoint (--resume). Every intermediate
# lands in runs/metaworld64v/ (git-ignored). Usage, from the repository root:
#   bash training/recipes/metaworld64v.sh            # everything
#   STEPS="data init base" bash training/recipes/metaworld64v.sh
# SHOWME_PY chooses the Python (default .venv/bin/python), THREADS the torch threads, NICE the
# niceness of every step (default 19: the machine is shared). On GPUs, set
# SHOWME_TRAIN="accelerate launch -m training.train" to run the training steps unchanged.
set -euo pipefail

source "$(dirname "$0")/common.sh"
STEPS=${STEPS:-"data init base decoder depth stage1 flow stage2 eval export"}
RUNS=runs/metaworld64v
DATA=$RUNS/data
mkdir -p "$RUNS"
TIMES=$RUNS/times.tsv

# 1. Data. Layout seeds are fixed here once: 0-199 train (a quarter of the scene layouts also
#    give a no-op clip), 2100-2109 val (choosing settings), 3000-3029 held-out test (never used
#    for choosing anything). Val and test carry evaluation-only phrasings and a no-op clip for
#    every scene layout.
if wants data; then
  for set in data:0-199:train:0.25 val:2100-2109:val:1 heldout:3000-3029:test:1; do
    IFS=: read -r name seeds split noop <<< "$set"
    [ -f "$RUNS/$name/manifest.jsonl" ] && continue
    timed "data-$name" $RUN $PY -m training.data.cli metaworld --layout-seeds "$seeds" \
      --split "$split" --noop-fraction "$noop" --size 64 --frames 16 --workers 2 \
      --out "$RUNS/$name"
  done
fi

# 2. Untrained model folder around the shipped model's frame autoencoder (f4; its encoder fixes
#    the latents; it was trained by training/recipes/metaworld64.sh and is kept unchanged by the
#    decoder pass below), components as metaworld64-model.yaml. The published runs started from
#    the first release's decoder; the shipped folder now holds the refined one, so stage 1's
#    structure reward of a rerun decodes with the sharper decoder.
if wants init && [ ! -f "$RUNS/init/model_index.json" ]; then
  timed init $RUN $PY -m training.recipes.assemble_model \
    --config training/configs/metaworld64-model.yaml \
    --vae showme_model/weights/showme-metaworld-64/vae --manifest "$DATA/manifest.jsonl" \
    --out "$RUNS/init"
fi

# 3. Base image-to-video model: whole 8-frame clips, first-frame latent at index 0 and zeros
#    elsewhere as the concat condition (metaworld64v-base.yaml).
if wants base && [ ! -f "$RUNS/base/final/model/model_index.json" ]; then
  timed base $RUN $TRAIN base --config training/configs/metaworld64v-base.yaml --resume
fi

# 3b. Decoder pass of the frame autoencoder of step 2 (encoder fixed, so every latent stays):
#     a sharper decoder raises the ceiling of every figure; train_report.json gives the val
#     reconstruction PSNR before and after. The evaluated model takes this decoder.
if wants decoder && [ ! -f "$RUNS/vae_decoder/train_report.json" ]; then
  timed decoder $RUN $PY -m training.train_vae --config training/configs/metaworld64v-vae-decoder.yaml \
    --init "$RUNS/init/vae" --manifest "$DATA/manifest.jsonl" \
    --val-manifest "$RUNS/val/manifest.jsonl" --out "$RUNS/vae_decoder" --threads "$OMP_NUM_THREADS"
fi

# 4. Depth critic of the stage-1 structure reward, on the simulator's rendered depth.
if wants depth && [ ! -f "$RUNS/small_depth.safetensors" ]; then
  timed depth $RUN $PY -m training.train_depth --manifest "$DATA/manifest.jsonl" \
    --out "$RUNS/small_depth.safetensors" --steps 600 --batch-size 8 --frames-per-clip 2 \
    --max-clips 600 --channels 8 16 32 48 --threads "$OMP_NUM_THREADS"
fi

# 5. Stage 1 (manipulation adapter, goal images).
if wants stage1 && [ ! -d "$RUNS/stage1/final/adapters/manipulation" ]; then
  timed stage1 $RUN $TRAIN stage1 --config training/configs/metaworld64v-stage1.yaml --resume
fi

# 6. Stage 2 (prediction adapter, rollouts, motion reward): DIS flow magnitudes of 8-frame
#    clips at latent size (f4: 16x16) first.
if wants flow; then
  timed flow $RUN $PY -m training.data.cli flow --manifest "$DATA/manifest.jsonl" --frames 8 \
    --size 64 --latent-factor 4
fi
if wants stage2 && [ ! -d "$RUNS/stage2/final/adapters/prediction" ]; then
  timed stage2 $RUN $TRAIN stage2 --config training/configs/metaworld64v-stage2.yaml --resume
fi

# 7. Evaluation, image and video mode, with the model folder's own sampler settings and adapter
#    choice per mode: the val split (layouts 2100-2109, for choosing settings) and the held-out
#    split (3000-3029, reported only). Skill clips give the goal, swap and off-arm figures (--off-arm: arm masks from the
#    simulator); the no-op clips give the "do nothing" figures.
if wants eval; then
  assemble_model_folder "$RUNS" "$RUNS/base/final/model"
  evaluate_model_folder "$RUNS/model" "$RUNS" "$RUNS/eval"
fi

# 8. Export: the evaluated model folder becomes the shipped one (MODEL_CARD.md is kept; it is
#    written by hand from the evaluation).
if wants export; then
  SHIPPED=showme_model/weights/showme-metaworld-64
  find "$SHIPPED" -mindepth 1 -not -name MODEL_CARD.md -delete
  cp -r "$RUNS/model/." "$SHIPPED/"
fi
