#!/usr/bin/env bash
# Trains the first release of the Meta-World model from scratch on a 2-core CPU: data, frame
# autoencoder, depth critic, base (frame pairs) -> stage 1 -> stage 2, evaluation. Its frame
# autoencoder is the one the shipped model keeps; the shipped model itself comes from
# training/recipes/metaworld64v.sh (a video base model). The model lands in runs/metaworld64/model.
# Every intermediate lands in runs/metaworld64/ (git-ignored). Usage, from the repository root:
#   bash training/recipes/metaworld64.sh
# Set SHOWME_PY to choose the Python (default .venv/bin/python); THREADS to set torch threads.
set -euo pipefail

PY=${SHOWME_PY:-.venv/bin/python}
export OMP_NUM_THREADS=${THREADS:-1}
RUNS=runs/metaworld64
DATA=$RUNS/data
MODEL=runs/metaworld64/model
mkdir -p "$RUNS"

# 1. Data: 2,000 clips (layout seeds 0-114, split by seed into train/val/test; training phrasings
#    for train clips, evaluation-only phrasings for val/test) and two held-out test layouts
#    (seeds 2028 and 2040, never trained on); 16 frames of 64x64 with rendered depth.
$PY -m training.data.cli metaworld --clips 2000 --size 64 --seed 0 --workers 2 --out "$DATA"
for seed in 2028 2040; do
  $PY -m training.data.cli metaworld --clips 22 --size 64 --seed $seed --workers 1 \
    --out "$RUNS/heldout_$seed"
done
# Stage-2 motion reward: DIS flow magnitudes of 8-frame clips at latent size (f4: 16x16).
$PY -m training.data.cli flow --manifest "$DATA/manifest.jsonl" --frames 8 --size 64 \
  --latent-factor 4

# 2. Frame autoencoder (f4, 4 latent channels). Its encoder fixes the latents everything below
#    trains on.
$PY -m training.train_vae --config training/configs/metaworld64-vae.yaml \
  --manifest "$DATA/manifest.jsonl" --out "$RUNS/vae" --threads "$OMP_NUM_THREADS"

# 3. On the second core, while the base model trains: a decoder-only second pass of the
#    autoencoder (same encoder, same latents) and the depth critic of the structure reward.
(
  $PY -m training.train_vae --config training/configs/metaworld64-vae-decoder.yaml \
    --init "$RUNS/vae" --manifest "$DATA/manifest.jsonl" --out "$RUNS/vae_decoder" \
    --threads "$OMP_NUM_THREADS"
  $PY -m training.train_depth --manifest "$DATA/manifest.jsonl" \
    --out "$RUNS/small_depth.safetensors" --steps 600 --batch-size 8 --frames-per-clip 2 \
    --max-clips 600 --channels 8 16 32 48 --threads "$OMP_NUM_THREADS"
) > "$RUNS/decoder_and_depth.log" 2>&1 &
side_jobs=$!

# 4. Untrained model folder (random UNet / image encoder / projector, packaged MiniLM-L6), then
#    the three training runs. Stage 1 starts once the side jobs are done: the base model takes
#    the second-pass decoder before stage 1 decodes rewards with it.
$PY -m training.recipes.assemble_model --config training/configs/metaworld64-model.yaml \
  --vae "$RUNS/vae" --manifest "$DATA/manifest.jsonl" --out "$RUNS/init"
$PY -m training.train base --config training/configs/metaworld64-base.yaml
wait "$side_jobs"
cp "$RUNS/vae_decoder/diffusion_pytorch_model.safetensors" "$RUNS/base/final/model/vae/"
$PY -m training.train stage1 --config training/configs/metaworld64-stage1.yaml
$PY -m training.train stage2 --config training/configs/metaworld64-stage2.yaml

# 5. The model folder: the base model with both adapters.
rm -rf "$MODEL"
cp -r "$RUNS/base/final/model" "$MODEL"
mkdir -p "$MODEL/adapters"
cp -r "$RUNS/stage1/final/adapters/manipulation" "$MODEL/adapters/"
cp -r "$RUNS/stage2/final/adapters/prediction" "$MODEL/adapters/"

# 6. Held-out evaluation (goal-image PSNR/SSIM vs the copy-input baseline, swap accuracy) on
#    the two held-out layouts and on the test split (held-out seeds) of the training data; the
#    sampler settings (DDIM 10 steps, eta 1, guidance 1) were chosen on the val split.
for set in 2028 2040 test; do
  manifest="$RUNS/heldout_$set/manifest.jsonl"
  [ "$set" = test ] && manifest="$DATA/manifest.jsonl"
  $PY -m training.evaluate --model "$MODEL" --manifest "$manifest" --split test \
    --phrasings recorded --num-steps 10 --guidance-scale 1 --eta 1 \
    --out "$RUNS/eval/image-$set.json"
done
