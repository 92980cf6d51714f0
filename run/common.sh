# Shared by the run/*.bash launchers (sourced, not run).
# launch DEVICES MODULE ARGS...
#   DEVICES: a GPU id (0), a comma-separated list of GPU ids (0,1,2,3: DDP via torchrun, one
#   process per GPU, the global batch unchanged), or `cpu`.
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$REPO_ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false

launch() {
    local devices=$1; shift
    local module=$1; shift
    if [[ "$devices" == "cpu" ]]; then
        python -m "$module" --device cpu "$@"
    elif [[ "$devices" =~ ^[0-9]+$ ]]; then
        CUDA_VISIBLE_DEVICES="$devices" python -m "$module" --device cuda "$@"
    elif [[ "$devices" =~ ^[0-9]+(,[0-9]+)+$ ]]; then
        local n
        n=$(tr ',' '\n' <<< "$devices" | wc -l)
        CUDA_VISIBLE_DEVICES="$devices" torchrun --standalone --nproc_per_node="$n" \
            -m "$module" --device cuda "$@"
    else
        echo "first argument must be a GPU id (0), a list of GPU ids (0,1,2,3) or cpu;" \
             "got '$devices'" >&2
        exit 2
    fi
}

usage_check() {  # usage_check NARGS_GIVEN SCRIPT_USAGE
    if (( $1 < 2 )); then
        echo "usage: $2" >&2
        exit 2
    fi
}
