# Shared by the pre-training launchers (sourced, not run).
# pretrain_stage DEVICES OUTPUT FLAGS...: one pre-training run into OUTPUT (its recipe is the
# --stage file among FLAGS); before a multi-process start it builds the corpus index and the
# other caches once (--prepareOnly), so the processes do not race to write them.
pretrain_stage() {
    local devices=$1 output=$2
    shift 2
    mkdir -p "$output"
    if [[ "$devices" == *,* ]] || (( ${NNODES:-1} > 1 )); then
        [[ -n "${LXRT_DRY_RUN:-}" ]] ||
            python -m tasks.pretrain.main --prepareOnly --device cpu --output "$output" "$@"
    fi
    launch "$devices" tasks.pretrain.main --tqdm --output "$output" "$@"
}
