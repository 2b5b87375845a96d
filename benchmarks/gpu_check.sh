#!/usr/bin/env bash
# One-shot GPU check of napari-deep-prior, sized for about 9 minutes on one H100/H200
# (limits: 60 + 30 + 100 + 90 s alone, then 240 s in parallel, plus start-up).
#
#   bash benchmarks/gpu_check.sh [DATA_DIR] [OUT_DIR]
#
# DATA_DIR holds set9/, set12/ and dip/ (default ../shared/data); OUT_DIR receives the JSON
# files and logs (default benchmarks/results/gpu).  Every part has its own time limit, and the
# benchmarks save their JSON after every image, so a part cut by its limit still leaves the
# images it finished.  Planned from the two runs on an H200 so far (README, "On a GPU"): what
# they measured is not repeated (s/step against size with and without CUDA graphs, the graphed
# default on all of full-size Set9, tiles on five of its images); this run measures what they
# left open.
#
# Phase 1, one process at a time (these are the timings to quote):
#   0. the CUDA tests of the graphed step (tests/restore/test_graphs.py and the rollback test of
#      test_fit.py; the step-by-step and fit-level comparisons were rewritten after the second run
#      and have not run on a GPU yet)
#   1. s/step of the graphed default under bf16 autocast at 512 and 1024 px (eager, bf16 was
#      slower than fp32 on the H200, 0.039 against 0.022 s, when launches dominated; graphed,
#      the fp32 step at 512 px costs 0.0085 s, mostly arithmetic)
#   2. full-size F16 and kodim02 in tiles of 288 px (--tile-size 288, the CPU default's capacity
#      rule), alone: what tiles cost on a GPU (the second run had them only side by side)
#   3. the seed ensemble K = 2 (one batched vmap pass, graphed) on full-size F16, alone, with room
#      to finish (the second run's 50 s were too short)
# Phase 2, quality only, several processes sharing the GPU (their times are contended: do not
# quote them as speed):
#   4. tiles of 288 px on the four full-size Set9 images the second run did not reach
#   5. the paper's 50 %-missing-pixel protocol on C.man and Man (the default inpaint preset with
#      its scattered-holes stop; Boat and Couple ran in the second run)
#   6. the zoomed crops of must-show 6 for F16 at full size: noisy / default / recipe (oracle stop,
#      whole image, cut at 110 s) / clean (crops-F16.png)
# CPU smoke run (tiny, to check the script itself; phase 2 on one thread a process, since
# several processes of 2 OpenMP threads each on a few cores slow each other down many times over):
#   SMOKE=1 bash benchmarks/gpu_check.sh
set -u
DATA=${1:-../shared/data}
OUT=${2:-benchmarks/results/gpu}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
here=$(cd "$(dirname "$0")" && pwd)
export PYTHONUNBUFFERED=1

if [ "${SMOKE:-0}" = "1" ]; then
    DEV=cpu; FULL="--size 96"; ESIZE="--size 48"
    T0=120; T1=120; T2=60; T3=150; TB=60; P2T=1; BSCALE=32
    CAP="--max-iterations 40"; ECAP="--iterations 20"; QEXTRA="--size 48 --max-iterations 40"
    TIMED=F16; TIMED_K=F16; TILE_A=House; TILE_B=Lena; TILE=64; Q_A=01_C.man; Q_B=02_House
    CROPS="--size 64 --window 32 --recipe-iterations 30"; CROP_IMG=F16
else
    python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
        echo "gpu_check: no CUDA GPU visible to torch; nothing to check" >&2; exit 2; }
    DEV=cuda; FULL="--full"; ESIZE="--size 0"
    T0=60; T1=100; T2=90; T3=240; TB=30; P2T=2; BSCALE=512,1024
    CAP=""; ECAP=""; QEXTRA="--size 0"
    TIMED=F16,kodim02; TIMED_K=F16; TILE_A=House,Peppers; TILE_B=kodim03,kodim12; TILE=288
    Q_A=01_C.man; Q_B=11_Man
    CROPS="--size 0 --window 64 --recipe-max-seconds 110"; CROP_IMG=F16
fi

{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
    python -c "import torch; print('torch', torch.__version__)"

    echo "== 0. CUDA tests of the graphed step (limit ${T0}s)"
    timeout "$T0" python -m pytest -q -p no:cacheprovider --disable-warnings -rfEs "$here/../tests/restore/test_graphs.py" \
        "$here/../tests/restore/test_fit.py::test_backtracking_restores_weights_after_divergence" 2>&1 | tail -n 40

    echo "== 1. s/step of the graphed default under bf16 autocast (limit ${TB}s)"
    timeout "$TB" python "$here/dip_speed.py" --device $DEV --scaling $BSCALE --scaling-steps 30 --amp bf16 \
        --out "$OUT/scaling-bf16.json"

    echo "== 2. default pipeline, full size, tiles of ${TILE} px, alone (limit ${T1}s)"
    timeout "$T1" python "$here/dip_speed.py" --data "$DATA" $FULL --device $DEV --cases denoise \
        --default-only --tile-size $TILE --images $TIMED $CAP --out "$OUT/tiles-timed.json"

    echo "== 3. seed ensemble K = 2, full size, alone (limit ${T2}s)"
    timeout "$T2" python "$here/dip_ensemble.py" --data "$DATA" --device $DEV $ESIZE --ks 2 --images $TIMED_K \
        $ECAP --out "$OUT/ensemble-timed.json"

    echo "== phase 2: quality runs in parallel (limit ${T3}s); logs in $OUT/p2-*.log"
    for part in A B; do
        eval "imgs=\$TILE_$part"
        OMP_NUM_THREADS=$P2T timeout "$T3" python "$here/dip_speed.py" --data "$DATA" $FULL --device $DEV \
            --cases denoise --default-only --tile-size $TILE --images "$imgs" $CAP \
            --out "$OUT/tiles-$part.json" >"$OUT/p2-tiles$part.log" 2>&1 &
        eval "imgs=\$Q_$part"
        OMP_NUM_THREADS=$P2T timeout "$T3" python "$here/dip_quality.py" --data "$DATA" --cases set12-50 $QEXTRA \
            --images "$imgs" --out "$OUT/missing-$part.json" >"$OUT/p2-missing$part.log" 2>&1 &
    done
    OMP_NUM_THREADS=$P2T timeout "$T3" python "$here/dip_crops.py" --data "$DATA" $CROPS --device $DEV \
        --images "$CROP_IMG" --variant default --variant recipe --out "$OUT/crops-$CROP_IMG.png" \
        >"$OUT/p2-crops-$CROP_IMG.log" 2>&1 &
    wait
    for f in "$OUT"/p2-*.log; do echo "--- $f"; grep -v '^ *step\|^  default' "$f" | tail -n 14; done
    date -u
} 2>&1 | tee "$LOG"
echo "gpu_check: results in $OUT"
