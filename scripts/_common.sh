# Shared by scripts/train_*.sh (sourced, not run): work from the repository root, pick the Python
# and accelerate of .venv when there is one, and run a command — or only print it with DRY_RUN=1.
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [[ -x .venv/bin/python ]]; then PYTHON="${PYTHON:-.venv/bin/python}"; else PYTHON="${PYTHON:-python}"; fi
if [[ -x .venv/bin/accelerate ]]; then ACCELERATE="${ACCELERATE:-.venv/bin/accelerate}"; else ACCELERATE="${ACCELERATE:-accelerate}"; fi
NUM_GPUS="${NUM_GPUS:-1}"

run() {
    if [[ -n "${DRY_RUN:-}" ]]; then
        printf '%q ' "$@"
        echo
    else
        "$@"
    fi
}

# accumulation that keeps a global batch of $1 pairs with $2 pairs per GPU on $NUM_GPUS GPUs
accumulation_for() {
    local steps=$(( $1 / ($2 * NUM_GPUS) ))
    (( steps >= 1 )) || { echo "global batch $1 < $2 x $NUM_GPUS GPUs" >&2; exit 2; }
    echo "$steps"
}
