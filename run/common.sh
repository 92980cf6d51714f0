# Shared by the run/*.bash launchers (sourced, not run).
# launch DEVICES MODULE ARGS...
#   DEVICES: a GPU id (0), a comma-separated list of GPU ids (0,1,2,3: DDP via torchrun, one
#   process per GPU, the global batch unchanged), or `cpu`.
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$REPO_ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export TOKENIZERS_PARALLELISM=false

DEVICES_RE='^(cpu|[0-9]+(,[0-9]+)*)$'

# Several machines: set NNODES (>1), NODE_RANK, MASTER_ADDR and MASTER_PORT on each and give
# every machine the same GPU list; the global batch is split over all processes.
rendezvous() {
    if (( ${NNODES:-1} > 1 )); then
        echo "--nnodes=$NNODES --node_rank=${NODE_RANK:?set NODE_RANK (0..NNODES-1)}" \
             "--master_addr=${MASTER_ADDR:?set MASTER_ADDR} --master_port=${MASTER_PORT:-29500}"
    else
        echo "--standalone"
    fi
}

launch() {
    local devices=$1; shift
    local module=$1; shift
    if [[ -n "${LXRT_DRY_RUN:-}" ]]; then  # print what would run, run nothing
        echo "dry run: devices $devices: python -m $module $*"
        return 0
    fi
    if [[ "$devices" == "cpu" ]]; then
        python -m "$module" --device cpu "$@"
    elif [[ "$devices" =~ ^[0-9]+$ ]] && (( ${NNODES:-1} <= 1 )); then
        CUDA_VISIBLE_DEVICES="$devices" python -m "$module" --device cuda "$@"
    elif [[ "$devices" =~ ^[0-9]+(,[0-9]+)*$ ]]; then
        local n
        n=$(tr ',' '\n' <<< "$devices" | wc -l)
        # shellcheck disable=SC2046  # the rendezvous flags are separate words
        CUDA_VISIBLE_DEVICES="$devices" torchrun $(rendezvous) --nproc_per_node="$n" \
            -m "$module" --device cuda "$@"
    else
        echo "first argument must be a GPU id (0), a list of GPU ids (0,1,2,3) or cpu;" \
             "got '$devices'" >&2
        exit 2
    fi
}

# usage_check NARGS_GIVEN SCRIPT_USAGE DEVICES NAME: run before anything is created, so a
# bad call (missing or malformed GPU argument, missing name, a name that would leave snap/)
# stops with the usage line, exit status 2, and no directory made.
usage_check() {
    local nargs=$1 usage=$2 devices=${3:-} name=${4:-}
    local problem=""
    if (( nargs < 2 )); then
        problem="give a GPU argument and an experiment name"
    elif [[ ! "$devices" =~ $DEVICES_RE ]]; then
        problem="first argument must be a GPU id (0), a list of GPU ids (0,1,2,3) or cpu; got '$devices'"
    elif [[ -z "$name" || "$name" == -* ]]; then
        problem="second argument must be the experiment name; got '$name'"
    elif [[ "$name" == */* || "$name" == "." || "$name" == ".." ]]; then
        problem="experiment name '$name' must be a plain directory name under snap/<task>/ (no '/', '.' or '..')"
    fi
    if [[ -n "$problem" ]]; then
        echo "$problem" >&2
        echo "usage: $usage" >&2
        exit 2
    fi
}

# require_flag FLAG USAGE WHY ARGS...: stop with the usage line and exit status 2 unless ARGS
# (the launcher's extra flags) hold FLAG.
require_flag() {
    local flag=$1 usage=$2 why=$3
    shift 3
    if [[ " $* " != *" $flag "* && " $* " != *" $flag="* ]]; then
        echo "usage: $usage   ($why)" >&2
        exit 2
    fi
}
