#!/usr/bin/env bash
# FluxMem's published offline results through lmms-eval (PyPI `lmms-eval`, no fork):
# VideoMME, MLVU dev and LongVideoBench val with Qwen2.5-VL-7B-Instruct, training-free.
#
#   bash scripts/lmms_eval_recipes.sh [videomme|videomme_w_subtitle|mlvu|longvideobench|all] [--baseline]
#
# Settings of the published runs: 1 fps, up to 1024 frames, max_pixels = 128*28*28 = 100352,
# short_frames=8, medium_frames=512. `--baseline` runs the same sampling with FluxMem off.
# Environment (all optional):
#   MODEL          model id or local directory        (Qwen/Qwen2.5-VL-7B-Instruct)
#   NUM_PROCESSES  data-parallel processes, one per GPU (number of visible GPUs, else 1)
#   ATTN           attn_implementation                (flash_attention_2 where flash-attn is installed, else sdpa)
#   DTYPE          dtype                              (bfloat16)
#   OUT            --output_path                      (results/lmms-eval)
#   LIMIT          --limit N for a quick smoke run     (unset: the whole benchmark)
#   EXTRA_ARGS     appended to --model_args, e.g. "system_prompt=..." (a key given twice: the last wins)
#   TASKS          lmms-eval task names run instead of the recipe's (e.g. a local copy of a task)
#   INCLUDE_PATH   --include_path: a folder of extra task YAML files
#   DRY_RUN=1      print the commands instead of running them
#
# Exit status: 0 when every task wrote its results; 1 when any did not (lmms-eval itself logs an
# error and exits 0 when a run fails, so each run is checked for its *_results.json); 2 for bad usage.
set -uo pipefail

which="${1:-all}"
use_fluxmem=True
if [[ "${2:-}" == "--baseline" || "${1:-}" == "--baseline" ]]; then
    use_fluxmem=False
    [[ "${1:-}" == "--baseline" ]] && which="${2:-all}"
fi

case "$which" in
    videomme) tasks=(videomme) ;;
    videomme_w_subtitle) tasks=(videomme_w_subtitle) ;;
    mlvu) tasks=(mlvu_dev) ;;
    longvideobench) tasks=(longvideobench_val_v) ;;
    all) tasks=(videomme mlvu_dev longvideobench_val_v) ;;
    *) echo "unknown recipe '$which': use videomme, videomme_w_subtitle, mlvu, longvideobench or all" >&2; exit 2 ;;
esac
if [[ -n "${TASKS:-}" ]]; then
    IFS=', ' read -r -a tasks <<< "$TASKS"
fi

MODEL="${MODEL:-Qwen/Qwen2.5-VL-7B-Instruct}"
DTYPE="${DTYPE:-bfloat16}"
OUT="${OUT:-results/lmms-eval}"
if [[ -z "${ATTN:-}" ]]; then
    if python -c "import flash_attn" >/dev/null 2>&1; then
        ATTN=flash_attention_2
    else
        ATTN=sdpa
        echo "flash-attn is not installed: using attn_implementation=sdpa (set ATTN to choose)" >&2
    fi
fi
if [[ -z "${NUM_PROCESSES:-}" ]]; then
    NUM_PROCESSES=$(python -c "import torch; print(max(torch.cuda.device_count(), 1))" 2>/dev/null || echo 1)
fi

# batch_size is lmms-eval's own --batch_size below (giving it in --model_args as well is an error)
model_args="pretrained=${MODEL},short_frames=8,medium_frames=512,fps=1,max_frames=1024,max_pixels=100352"
model_args+=",use_fluxmem=${use_fluxmem},dtype=${DTYPE},attn_implementation=${ATTN}"
[[ -n "${EXTRA_ARGS:-}" ]] && model_args+=",${EXTRA_ARGS}"

if (( NUM_PROCESSES > 1 )); then
    launcher=(accelerate launch --num_processes "$NUM_PROCESSES" -m lmms_eval)
else
    launcher=(python -m lmms_eval)
fi

suffix=$([[ "$use_fluxmem" == True ]] && echo fluxmem || echo baseline)
failed=()
for task in "${tasks[@]}"; do
    out_dir="$OUT/$task-$suffix"
    command=("${launcher[@]}" --model fluxmem_qwen2_5_vl --model_args "$model_args" --tasks "$task"
             --batch_size 1 --log_samples --log_samples_suffix "$suffix" --output_path "$out_dir")
    [[ -n "${INCLUDE_PATH:-}" ]] && command+=(--include_path "$INCLUDE_PATH")
    [[ -n "${LIMIT:-}" ]] && command+=(--limit "$LIMIT")
    if [[ "${DRY_RUN:-0}" == 1 ]]; then
        for word in "${command[@]}"; do
            if [[ "$word" =~ ^[A-Za-z0-9_./:=,*-]+$ ]]; then printf '%s ' "$word"; else printf "'%s' " "$word"; fi
        done
        echo
        continue
    fi
    mkdir -p "$out_dir"
    marker=$(mktemp "$out_dir/.started.XXXXXX")
    "${command[@]}"
    status=$?
    results=$(find "$out_dir" -name '*_results.json' -newer "$marker" -print -quit)
    rm -f "$marker"
    if (( status != 0 )) || [[ -z "$results" ]]; then
        echo "recipe $which: task $task failed (lmms-eval exit status $status, no results written under $out_dir); see the error above" >&2
        failed+=("$task")
    else
        echo "recipe $which: task $task results: $results" >&2
    fi
done
if (( ${#failed[@]} > 0 )); then
    echo "recipe $which: ${#failed[@]} of ${#tasks[@]} task(s) failed: ${failed[*]}" >&2
    exit 1
fi
