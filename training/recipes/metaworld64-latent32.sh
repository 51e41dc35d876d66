#!/usr/bin/env bash
# Meta-World model with 32x32 latents: the recipe of metaworld64v.sh (same clips, base model on
# whole 8-frame clips, stage 1, stage 2, evaluation) around an f2 frame autoencoder
# (metaworld64-vae-f2.yaml) that keeps the scenes' thin parts, with the UNet on 2x2 latent
# patches (metaworld64-latent32-model.yaml) so that a goal image or a rollout costs what the
# shipped model's do. It reads the clips and the depth critic of metaworld64v.sh (run its
# "data depth" steps first) and writes to runs/latent32/ (git-ignored). Every step is
# resumable, as in metaworld64v.sh. Usage, from the repository root:
#   bash training/recipes/metaworld64-latent32.sh
#   STEPS="vae ceiling" bash training/recipes/metaworld64-latent32.sh
set -euo pipefail

source "$(dirname "$0")/common.sh"
STEPS=${STEPS:-"vae ceiling init base decoder stage1 flow stage2 eval"}
SOURCE=runs/metaworld64v
DATA=$SOURCE/data
RUNS=runs/latent32
mkdir -p "$RUNS"
TIMES=$RUNS/times.tsv
BASE=$RUNS/base-repeated/final/model  # the base model of step 3's last run
# The stage configs of metaworld64v.sh, pointed at this recipe's folders.
stage_paths() {  # stage_paths STAGE: --set options for runs/latent32
  echo "--set output_dir=$RUNS/$1 --set model.folder=$BASE"
}

# 1. The f2 frame autoencoder, from scratch (the shipped f4 one's settings).
if wants vae && [ ! -f "$RUNS/vae/config.json" ]; then
  timed vae $RUN $PY -m training.train_vae --config training/configs/metaworld64-vae-f2.yaml \
    --manifest "$DATA/manifest.jsonl" --val-manifest "$SOURCE/val/manifest.jsonl" \
    --out "$RUNS/vae" --threads "$OMP_NUM_THREADS"
fi

# 1b. Its ceiling on the val layouts: off-arm PSNR and swap accuracy, objects kept, scored on
#     its reconstructions of the true final frames (training.autoencoder_ceiling).
if wants ceiling && [ ! -f "$RUNS/eval/ceiling-val.json" ]; then
  timed ceiling $RUN $PY -m training.autoencoder_ceiling --vae "$RUNS/vae" \
    --manifest "$SOURCE/val/manifest.jsonl" --split val --phrasings recorded --off-arm \
    --workers 2 --out "$RUNS/eval/ceiling-val.json"
fi

# 2. Untrained model folder around it.
if wants init && [ ! -f "$RUNS/init/model_index.json" ]; then
  timed init $RUN $PY -m training.recipes.assemble_model \
    --config training/configs/metaworld64-latent32-model.yaml --vae "$RUNS/vae" \
    --manifest "$DATA/manifest.jsonl" --out "$RUNS/init"
fi

# 3. Base image-to-video model: metaworld64v-base.yaml's run on this folder (3,000 steps), then
#    three more runs of it, each from the previous one's model with a fresh warm-up and cosine
#    schedule (1,500, 3,000 and 1,500 steps): 9,000 steps in all. The f2 latents hold more
#    detail per cell than the shipped f4 ones, and the model on them needs the longer run to
#    pass the shipped model off the arm (docs/RESULTS.md, "A finer latent grid"). The last run
#    switches video mode's concat condition to the repeated first-frame latent
#    (DynamiCrafter's), in training and in the exported folder (concat_layout): on the val
#    layouts it beat the same 1,500 steps with the first-frame-only layout ("The concat
#    layout").
base_run() {  # base_run NAME FROM [--set max_steps=N]: one base run from the model folder FROM
  if [ ! -f "$RUNS/$1/final/model/model_index.json" ]; then
    timed "$1" $RUN $TRAIN base --config training/configs/metaworld64v-base.yaml --resume \
      --set output_dir=$RUNS/$1 --set model.folder=$2 "${@:3}"
  fi
}
if wants base; then
  base_run base "$RUNS/init"
  base_run base-more "$RUNS/base/final/model" --set max_steps=1500
  base_run base-long "$RUNS/base-more/final/model"
  base_run base-repeated "$RUNS/base-long/final/model" --set max_steps=1500 \
    --set video_concat=0.0 --set sampler.concat_layout=repeated
fi

# 3b. Decoder pass of the f2 autoencoder (metaworld64v.sh's step 3b: encoder and latents fixed).
if wants decoder && [ ! -f "$RUNS/vae_decoder/train_report.json" ]; then
  timed decoder $RUN $PY -m training.train_vae --config training/configs/metaworld64v-vae-decoder.yaml \
    --init "$RUNS/vae" --manifest "$DATA/manifest.jsonl" \
    --val-manifest "$SOURCE/val/manifest.jsonl" --out "$RUNS/vae_decoder" --threads "$OMP_NUM_THREADS"
fi

# 4. Stage 1 with metaworld64v.sh's depth critic (it reads frames, not latents).
if wants stage1 && [ ! -d "$RUNS/stage1/final/adapters/manipulation" ]; then
  timed stage1 $RUN $TRAIN stage1 --config training/configs/metaworld64v-stage1.yaml --resume \
    $(stage_paths stage1)
fi

# 5. Stage 2: DIS flow magnitudes at this latent grid (f2: 32x32) first.
if wants flow; then
  timed flow $RUN $PY -m training.data.cli flow --manifest "$DATA/manifest.jsonl" --frames 8 \
    --size 64 --latent-factor 2
fi
if wants stage2 && [ ! -d "$RUNS/stage2/final/adapters/prediction" ]; then
  timed stage2 $RUN $TRAIN stage2 --config training/configs/metaworld64v-stage2.yaml --resume \
    $(stage_paths stage2) \
    --set model.manipulation_adapter=$RUNS/stage1/final/adapters/manipulation
fi

# 6. Evaluation as in metaworld64v.sh: image and video mode, val and held-out layouts.
if wants eval; then
  assemble_model_folder "$RUNS" "$BASE"
  evaluate_model_folder "$RUNS/model" "$SOURCE" "$RUNS/eval"
fi
