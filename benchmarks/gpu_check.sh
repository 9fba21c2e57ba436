#!/usr/bin/env bash
# The one command for a borrowed GPU machine (make gpu-check): build, test and
# benchmark hrnet_fast in a single call of at most 6 minutes, build included,
# leaving a report (run(command="make gpu-check", timeout_s=380) leaves a
# 15-minute lease room for a start and a full rerun).
#
#   bash benchmarks/gpu_check.sh          # from the repository root
#
# Steps (each under `timeout`, sharing one deadline, so a hang in one still
# leaves the report):
#   gpu        nvidia-smi and torch must see a GPU -- else stop at once, nothing built
#   build      pip install --no-build-isolation --no-deps -e . (TORCH_CUDA_ARCH_LIST=9.0, MAX_JOBS=16)
#   info       build_info(), nvidia-smi -L, versions
#   bandwidth  device-to-device copy bandwidth (benchmarks/bandwidth.py)
#   gpu_tests  pytest tests/gpu -x, but the compute-sanitizer test
#   exchange   benchmarks/exchange_gpu.py: the op (W48 seg stage-4 branches 0 and 3, nearest and
#              bilinear, forward and backward; eager, torch.compile, cuda, triton) and the stage-4
#              rows with conv terms; profiler kernel time and launches, CUDA-graph replay, host time
#   models     hrnet-fast bench: W48 seg 1x3x1024x2048 and W32 pose 1x3x256x192 and 32x3x256x192,
#              bf16 channels_last, eager / fused / optimized
#   memory     hrnet-fast memory: W48 seg 2x3x512x1024 bf16 autocast channels_last, eager / fused /
#              lean / checkpoint: saved bytes, peak, step time, largest batch, gradient error
#   then, with GPU_CHECK_FULL=1 or while time is left: sanitizer (compute-sanitizer memcheck),
#   compile_max (the models against torch.compile(mode="max-autotune"), minutes of compiling),
#   cpu_tests
#
# Report: $OUT when set, else benchmarks/results/<date>-<gpu>/ -- at most 8
# files (the device tool returns no more): gpu_check.log, summary.md,
# exchange_gpu.json, bench.png, aux.tar.gz (step table, build_info,
# bandwidth, nvidia-smi, the model benchmarks' and the optional steps' JSON).
#
# Failure: the first broken step is named in a banner, at the top of
# summary.md and in the exit status (1; 2 when no GPU). A failed build or a
# missing GPU stops the script; after other failures the independent later
# steps still run, so one failing test does not cost the benchmark figures
# of a scarce GPU run (STOP_ON_FAIL=1 stops at the first failure instead).
#
# Knobs: GPU_CHECK_BUDGET_S (total seconds, default 350), STOP_ON_FAIL,
# PYTHON (default python3), SKIP_BUILD=1 (use an existing build),
# GPU_CHECK_STEPS="build gpu_tests ..." (run only these steps, e.g. a rerun
# after a fix), GPU_TESTS (what gpu_tests runs, default tests/gpu),
# GPU_CHECK_FULL=1 (the optional steps too, with a budget of 900 s).
set -u
cd "$(dirname "$0")/.." || exit 2

PY=${PYTHON:-python3}
FULL=${GPU_CHECK_FULL:-0}
BUDGET=${GPU_CHECK_BUDGET_S:-$([ "$FULL" = 1 ] && echo 900 || echo 350)}
STOP_ON_FAIL=${STOP_ON_FAIL:-0}
ONLY=$(printf '%s' "${GPU_CHECK_STEPS:-}" | tr ',' ' ')
GPU_TESTS=${GPU_TESTS:-tests/gpu}
START=$(date +%s)
DEADLINE=$((START + BUDGET))
RESERVE=20  # seconds kept for the summary at the end
export PYTHONUNBUFFERED=1

say() { printf '%s\n' "$*"; }
banner() { say ""; say "==================== $* ===================="; }

# --- gpu: before anything expensive ------------------------------------------
GPU_NAME=""
if command -v nvidia-smi >/dev/null 2>&1; then
    GPU_NAME=$(timeout 30 nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1)
fi
if [ -z "$GPU_NAME" ]; then
    say "gpu_check: ERROR: no NVIDIA GPU found (nvidia-smi is missing or lists no GPU)." >&2
    say "gpu_check: this script builds, tests and benchmarks on a CUDA machine; nothing was built or run." >&2
    if [ -n "${OUT:-}" ]; then
        mkdir -p "$OUT" && say "gpu_check: no NVIDIA GPU found; nothing was built or run." > "$OUT/gpu_check.log"
    fi
    exit 2
fi

SLUG=$(printf '%s' "$GPU_NAME" | tr -cs 'A-Za-z0-9._-' '-' | sed 's/-*$//')
REPORT=${OUT:-benchmarks/results/$(date -u +%Y-%m-%d)-$SLUG}
AUX="$REPORT/aux"
mkdir -p "$AUX"
LOG="$REPORT/gpu_check.log"
exec > >(tee -a "$LOG") 2>&1
TEE_PID=$!
say "gpu_check: $(date -u '+%Y-%m-%d %H:%M:%S UTC') on $(hostname), GPU: $GPU_NAME, report: $REPORT, budget ${BUDGET}s"
say "gpu_check: git $(git rev-parse --short HEAD 2>/dev/null || echo '?') $(git status --porcelain 2>/dev/null | grep -q . && echo '(with local changes)')"

FIRST_FAIL=""
STOPPED=""
printf 'step\tstatus\tseconds\n' > "$AUX/steps.tsv"
record() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >> "$AUX/steps.tsv"; }
fail() {  # name status
    [ -z "$FIRST_FAIL" ] && FIRST_FAIL="$1: $2"
    say "gpu_check: FAILED step $1: $2"
    [ "$STOP_ON_FAIL" = "1" ] && STOPPED="$1"
}

# run_step NAME CAP LATER OPTIONAL COMMAND: run COMMAND (a shell string; it
# may use $STEP_T, the seconds it was given) under timeout: at most CAP
# seconds, and never eating into the LATER seconds kept for the later steps.
run_step() {
    local name=$1 cap=$2 later=$3 optional=$4 cmd=$5
    if [ -n "$STOPPED" ]; then record "$name" "skipped (stopped after $STOPPED)" 0; return 1; fi
    if [ -n "$ONLY" ]; then
        case " $ONLY " in
            *" $name "*) later=0 ;;  # a chosen subset: each step's cap is its budget
            *) record "$name" "skipped (not in GPU_CHECK_STEPS)" 0; return 0 ;;
        esac
    fi
    local left=$((DEADLINE - RESERVE - later - $(date +%s)))
    STEP_T=$((cap < left ? cap : left))
    export STEP_T
    if [ "$STEP_T" -lt 15 ]; then
        say "gpu_check: step $name not run: out of time"
        if [ "$optional" = 1 ]; then record "$name" "skipped (optional; out of time)" 0
        else record "$name" "not run: out of time" 0; fail "$name" "not run: out of time"; fi
        return 1
    fi
    banner "$name (up to ${STEP_T}s)"
    say "\$ $cmd"
    local t0 rc
    t0=$(date +%s)
    timeout -k 20 "$STEP_T" bash -c "$cmd"
    rc=$?
    local dt=$(($(date +%s) - t0))
    if [ "$rc" -eq 0 ]; then
        record "$name" ok "$dt"; say "gpu_check: step $name ok (${dt}s)"; return 0
    fi
    local status="failed (exit $rc)"
    { [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; } && status="timeout after ${STEP_T}s (exit $rc)"
    if [ "$optional" = 1 ] && { [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; }; then
        record "$name" "incomplete (optional; $status)" "$dt"
        say "gpu_check: optional step $name incomplete: $status"
    else
        record "$name" "$status" "$dt"
        fail "$name" "$status"
    fi
    return 1
}

finish() {
    banner "summary"
    # One plot of every model case, then the small files into one archive.
    "$PY" - "$REPORT" <<'EOF' || say "gpu_check: could not draw bench.png"
import glob, json, os, sys
sys.path.insert(0, os.getcwd())
from hrnet_fast.bench import plotting, reporting
d = sys.argv[1]
reps = []
for p in sorted(glob.glob(os.path.join(d, "aux", "bench_*.json"))):
    try:
        doc = json.load(open(p))
    except Exception:
        continue
    reps += [r for r in reporting.load_reports(doc) if r.get("results")]
if reps and plotting.have_matplotlib():
    plotting.plot(reps, os.path.join(d, "bench.png"))
EOF
    "$PY" benchmarks/summarize.py "$REPORT" > /dev/null || say "gpu_check: summarize.py failed"
    [ -f "$REPORT/summary.md" ] && cat "$REPORT/summary.md"
    tar -czf "$REPORT/aux.tar.gz" -C "$REPORT" aux && rm -rf "$AUX"
    say ""
    say "gpu_check: report in $REPORT: $(ls "$REPORT" | tr '\n' ' ')"
    say "gpu_check: total $(($(date +%s) - START))s"
    local rc=0
    if [ -n "$FIRST_FAIL" ]; then
        say "gpu_check: *** FAILED *** first broken step: $FIRST_FAIL"
        rc=1
    else
        say "gpu_check: all steps ok"
    fi
    exec 1>&- 2>&-  # let tee finish writing the log before the script ends
    wait "$TEE_PID" 2>/dev/null
    exit "$rc"
}

# --- build ------------------------------------------------------------------
if [ "${SKIP_BUILD:-0}" = 1 ]; then
    record build "skipped (SKIP_BUILD=1)" 0
elif ! run_step build 150 190 0 "command -v nvcc && nvcc --version | tail -n 2; \
        TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 $PY -m pip install --no-build-isolation --no-deps -e ."; then
    STOPPED=build
    finish
fi

# --- info -------------------------------------------------------------------
run_step info 30 185 0 "nvidia-smi -L; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem \
    --format=csv | tee '$AUX/nvidia-smi.txt'; $PY -c \"
import json, torch, hrnet_fast
info = hrnet_fast.build_info()
json.dump(info, open('$AUX/build_info.json', 'w'))
print('build_info:', json.dumps(info))
print('backends:', hrnet_fast.backends())
print('torch', torch.__version__, 'cuda', torch.version.cuda, 'device', torch.cuda.get_device_name())
try:
    import triton; print('triton', triton.__version__)
except ImportError:
    print('triton: not installed')
if not info.get('extension_loaded'):
    raise SystemExit('hrnet_fast._C did not load: ' + str(info.get('error')))
\""

# --- copy bandwidth ---------------------------------------------------------
run_step bandwidth 20 180 0 "$PY benchmarks/bandwidth.py --device cuda --gib 2 --json '$AUX/bandwidth.json'"

# --- GPU tests --------------------------------------------------------------
# compute-sanitizer runs python and torch under instrumentation: its own
# optional step at the end.
run_step gpu_tests 90 100 0 "$PY -m pytest $GPU_TESTS -x -q -p no:cacheprovider -rfEs -k 'not compute_sanitizer' \
    --junitxml '$AUX/gpu_tests.xml'"

# --- the op and the rows with conv terms (issues 14, 16) ----------------------
run_step exchange 60 45 0 "$PY benchmarks/exchange_gpu.py --json '$REPORT/exchange_gpu.json'"

# --- whole models (issue 15) ------------------------------------------------------
BENCH="$PY -m hrnet_fast bench --device cuda --no-progress --dtype bfloat16 --channels-last"
run_step models 45 50 0 "$BENCH --model w48 --head seg --size 1024x2048 --batch 1 --iters 20 \
        --variants eager,fused,optimized --time-budget 14 --json '$AUX/bench_w48_seg.json' && \
    $BENCH --model w32 --head pose --size 256x192 --batch 1 --iters 30 --variants eager,fused,optimized \
        --time-budget 10 --json '$AUX/bench_w32_pose_b1.json' && \
    $BENCH --model w32 --head pose --size 256x192 --batch 32 --iters 20 --variants eager,fused,optimized \
        --time-budget 10 --json '$AUX/bench_w32_pose_b32.json'"

# --- training memory (issue 22) ---------------------------------------------------
run_step memory 50 0 0 "$PY -m hrnet_fast memory --device cuda --model w48-seg --size 512x1024 --batch 2 \
    --autocast bfloat16 --channels-last --variants eager,fused,lean,checkpoint --rounds 5 \
    --json '$AUX/memory_w48_seg.json'"

# --- optional, with GPU_CHECK_FULL=1 or while time is left ---------------------
run_step sanitizer 120 0 1 "$PY -m pytest tests/gpu -q -p no:cacheprovider -rfEs -k compute_sanitizer"
if [ "$FULL" = 1 ]; then
    run_step compile_max 400 0 1 "$BENCH --model w32 --head pose --size 256x192 --batch 32 --iters 20 \
            --variants eager,optimized,compile[max-autotune] --json '$AUX/bench_compile_w32_pose_b32.json'; \
        $PY benchmarks/exchange_gpu.py --sections rows --compile-mode max-autotune \
            --json '$AUX/exchange_rows_max_autotune.json'; \
        $PY -m hrnet_fast memory --device cuda --model w48-seg --size 512x1024 --batch 2 --autocast bfloat16 \
            --channels-last --variants eager,lean,checkpoint,compile --json '$AUX/memory_w48_seg_compile.json'"
    run_step cpu_tests 120 0 1 "$PY -m pytest tests -q -x -p no:cacheprovider --ignore=tests/gpu"
fi

finish
