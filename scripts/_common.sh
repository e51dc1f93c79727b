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

# The train_*.sh scripts' launch: `mm_unidpo.cli train $1` with
#   $1  the training config,
#   $2  the accelerate config used when NUM_GPUS > 1,
#   $3  GLOBAL/PER_GPU (e.g. 128/2): on many GPUs, add the gradient accumulation that keeps a global
#       batch of GLOBAL pairs with PER_GPU pairs per GPU (accumulation_for); "" adds nothing,
# then the overrides for one GPU, up to "--", then the caller's arguments, which go last in both cases.
launch_train() {
    local config=$1 accelerate_config=$2 batch=$3
    shift 3
    local one_gpu=()
    while (( $# )) && [[ $1 != -- ]]; do one_gpu+=("$1"); shift; done
    if (( $# )); then shift; fi
    if (( NUM_GPUS > 1 )); then
        local accumulation=()
        if [[ -n $batch ]]; then  # computed first: a failing $(...) inside run's arguments would not stop set -e
            local steps
            steps=$(accumulation_for "${batch%/*}" "${batch#*/}")
            accumulation=("--train.gradient_accumulation_steps=$steps")
        fi
        run "$ACCELERATE" launch --config_file "$accelerate_config" --num_processes "$NUM_GPUS" \
            -m mm_unidpo.cli train "$config" "${accumulation[@]}" "$@"
    else
        run "$PYTHON" -m mm_unidpo.cli train "$config" "${one_gpu[@]}" "$@"
    fi
}
