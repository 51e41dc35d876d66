# Sourced by the recipes: settings from the environment and the step helpers.
# SHOWME_PY chooses the Python (default .venv/bin/python), THREADS the torch threads (default 1),
# NICE the niceness of every step (default 19: the machine is shared), SHOWME_TRAIN the training
# command (on GPUs: "accelerate launch -m training.train"). A recipe sets STEPS and TIMES.
PY=${SHOWME_PY:-.venv/bin/python}
export OMP_NUM_THREADS=${THREADS:-1}
RUN="nice -n ${NICE:-19}"
TRAIN=${SHOWME_TRAIN:-"$PY -m training.train"}

wants() { [[ " $STEPS " == *" $1 "* ]]; }  # wants STEP: is STEP among $STEPS?
timed() {  # timed NAME COMMAND...: run, and append the step's wall time to $TIMES
  local start=$SECONDS
  "${@:2}"
  printf '%s\t%d s\n' "$1" $((SECONDS - start)) >> "$TIMES"
}
assemble_model_folder() {  # assemble_model_folder RUNS BASE [SUFFIX]: RUNS/modelSUFFIX from BASE, the decoder pass, RUNS/stage1SUFFIX and RUNS/stage2SUFFIX
  local model=$1/model${3:-}
  rm -rf "$model"
  cp -r "$2" "$model"
  cp "$1/vae_decoder/diffusion_pytorch_model.safetensors" "$model/vae/"
  mkdir -p "$model/adapters"
  cp -r "$1/stage1${3:-}/final/adapters/manipulation" "$1/stage2${3:-}/final/adapters/prediction" \
    "$model/adapters/"
  # Video mode runs the base model alone: on the val layouts it beat base + both adapters
  # (metaworld64v-ablations.sh; docs/RESULTS.md). Both adapters stay in the folder.
  $PY -c "from showme_model.adapters import write_mode_roles as w; w('$model', {'video': []})"
}
evaluate_model_folder() {  # evaluate_model_folder MODEL CLIPS OUT: both modes, CLIPS/{val,heldout}
  local set name split mode
  for set in val:val heldout:test; do
    IFS=: read -r name split <<< "$set"
    for mode in image video; do
      timed "eval-$name-$mode" $RUN $PY -m training.evaluate --model "$1" \
        --manifest "$2/$name/manifest.jsonl" --split "$split" --phrasings recorded \
        --mode "$mode" --off-arm --workers 2 --out "$3/$mode-$name.json"
    done
  done
}
