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
