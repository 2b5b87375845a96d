#!/usr/bin/env bash
# One-shot GPU check of napari-deep-prior, sized for about 9 minutes on one H100/H200
# (limits: 60 + 2 x 40 + 130 + 50 s alone, then 220 s in parallel, plus start-up).
#
#   bash benchmarks/gpu_check.sh [DATA_DIR] [OUT_DIR]
#
# DATA_DIR holds set9/, set12/ and dip/ (default ../shared/data); OUT_DIR receives the JSON
# files and logs (default benchmarks/results/gpu).  Every part has its own time limit, and the
# benchmarks save their JSON after every image, so a part cut by its limit still leaves the
# images it finished.  Planned from the earlier runs on an H200 (README, "On a GPU"): what they
# measured is not repeated; this run measures the step recorded as a CUDA graph
# (DIPParams.cuda_graph, on by default) and what it makes affordable.
#
# Phase 1, one process at a time (these are the timings to quote):
#   0. the CUDA tests of the graphed step (tests/restore/test_graphs.py: graphed vs eager fits)
#   1. s/step and peak memory of the default pipeline vs size, 128 ... 2048, fp32, graphed; and
#      512 px without the graph (--no-cuda-graph), for the comparison within the same run
#   2. the default pipeline on full-size Set9 (sigma 25) as a user calls denoise(), each plane
#      whole (the GPU default), after a warm-up
#   3. the seed ensemble K = 2 (one batched vmap pass, graphed), full-size F16 and kodim02
# Phase 2, quality only, several processes sharing the GPU (their times are contended: do not
# quote them as speed):
#   4. K = 2 on the other seven full-size Set9 images (two processes)
#   5. the default in tiles of 288 px (--tile-size 288, the CPU default's capacity rule) on
#      full-size Set9 (two processes)
#   6. the paper's 50 %-missing-pixel protocol on four Table-1 images of Set12 (the default
#      inpaint preset with its scattered-holes stop)
#   7. the zoomed crops of must-show 6 at full size: noisy / default / recipe (oracle stop, whole
#      image, cut at 110 s) / clean, F16 and kodim02 in one process each (crops-*.png)
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
    DEV=cpu; FULL="--size 96"; ESIZE="--size 48"; SCALE=64,96; SCALE1=64
    T0=120; T1=60; T2=120; T3=60; T4=150; P2T=1
    CAP="--max-iterations 40"; ECAP="--iterations 20"
    QEXTRA="--size 48 --max-iterations 40"
    SET9=F16,House; TIMED_K=F16; K_A=House; K_B=Lena; TILE_A=F16; TILE_B=House; TILE=64
    Q_A=01_C.man; Q_B=02_House
    CROPS="--size 64 --window 32 --recipe-iterations 30"; CROP_IMGS=F16
else
    python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
        echo "gpu_check: no CUDA GPU visible to torch; nothing to check" >&2; exit 2; }
    DEV=cuda; FULL="--full"; ESIZE="--size 0"; SCALE=128,256,512,1024,2048; SCALE1=512
    T0=60; T1=40; T2=130; T3=50; T4=220; P2T=2
    CAP=""; ECAP=""; QEXTRA="--size 0"
    SET9=Baboon,F16,House,Lena,Peppers,kodim01,kodim02,kodim03,kodim12; TIMED_K=F16,kodim02
    K_A=Baboon,House,Lena,Peppers; K_B=kodim01,kodim03,kodim12
    TILE_A=Baboon,F16,House,Lena,Peppers; TILE_B=kodim01,kodim02,kodim03,kodim12; TILE=288
    Q_A=01_C.man,10_Boat; Q_B=11_Man,12_Couple
    CROPS="--size 0 --window 64 --recipe-max-seconds 110"; CROP_IMGS="F16 kodim02"
fi

{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
    python -c "import torch; print('torch', torch.__version__)"

    echo "== 0. CUDA tests of the graphed step (limit ${T0}s)"
    timeout "$T0" python -m pytest -q -p no:cacheprovider --disable-warnings -rfEs "$here/../tests/restore/test_graphs.py" 2>&1 | tail -n 40

    echo "== 1. s/step and memory vs size, fp32, graphed; ${SCALE1} px without the graph (limit ${T1}s)"
    timeout "$T1" python "$here/dip_speed.py" --device $DEV --scaling $SCALE --scaling-steps 30 \
        --out "$OUT/scaling.json"
    timeout "$T1" python "$here/dip_speed.py" --device $DEV --scaling $SCALE1 --scaling-steps 30 \
        --no-cuda-graph --out "$OUT/scaling-eager.json"

    echo "== 2. default pipeline, full-size Set9, each plane whole (limit ${T2}s)"
    timeout "$T2" python "$here/dip_speed.py" --data "$DATA" $FULL --device $DEV --cases denoise \
        --default-only --tile-size 0 --images $SET9 $CAP --out "$OUT/default-whole.json"

    echo "== 3. seed ensemble K = 2, full size, alone (limit ${T3}s)"
    timeout "$T3" python "$here/dip_ensemble.py" --data "$DATA" --device $DEV $ESIZE --ks 2 --images $TIMED_K \
        $ECAP --out "$OUT/ensemble-timed.json"

    echo "== phase 2: quality runs in parallel (limit ${T4}s); logs in $OUT/p2-*.log"
    for part in A B; do
        eval "imgs=\$K_$part"
        OMP_NUM_THREADS=$P2T timeout "$T4" python "$here/dip_ensemble.py" --data "$DATA" --device $DEV $ESIZE \
            --ks 2 --images "$imgs" $ECAP --out "$OUT/ensemble-$part.json" >"$OUT/p2-ensemble$part.log" 2>&1 &
        eval "imgs=\$TILE_$part"
        OMP_NUM_THREADS=$P2T timeout "$T4" python "$here/dip_speed.py" --data "$DATA" $FULL --device $DEV \
            --cases denoise --default-only --tile-size $TILE --images "$imgs" $CAP \
            --out "$OUT/tiles-$part.json" >"$OUT/p2-tiles$part.log" 2>&1 &
    done
    OMP_NUM_THREADS=$P2T timeout "$T4" python "$here/dip_quality.py" --data "$DATA" --cases set12-50 $QEXTRA \
        --images $Q_A --out "$OUT/missing-a.json" >"$OUT/p2-missing-a.log" 2>&1 &
    OMP_NUM_THREADS=$P2T timeout "$T4" python "$here/dip_quality.py" --data "$DATA" --cases set12-50 $QEXTRA \
        --images $Q_B --out "$OUT/missing-b.json" >"$OUT/p2-missing-b.log" 2>&1 &
    for img in $CROP_IMGS; do
        OMP_NUM_THREADS=$P2T timeout "$T4" python "$here/dip_crops.py" --data "$DATA" $CROPS --device $DEV \
            --images "$img" --variant default --variant recipe --out "$OUT/crops-$img.png" \
            >"$OUT/p2-crops-$img.log" 2>&1 &
    done
    wait
    for f in "$OUT"/p2-*.log; do echo "--- $f"; grep -v '^ *step\|^  default' "$f" | tail -n 14; done
    date -u
} 2>&1 | tee "$LOG"
echo "gpu_check: results in $OUT"
