#!/usr/bin/env bash
# One-shot GPU check of napari-deep-prior, sized for about 10.5 minutes on one H100/H200
# (parts 2-4 and phase 2's limits: 90 + 150 + 90 + 280 s, plus start-up).
#
#   bash benchmarks/gpu_check.sh [DATA_DIR] [OUT_DIR]
#
# DATA_DIR holds set9/, set12/ and dip/ (default ../shared/data); OUT_DIR receives the JSON
# files and logs (default benchmarks/results/gpu).  Every part has its own time limit, and the
# speed benchmarks save their JSON after every image, so a part cut by its limit still leaves the
# images it finished.  Planned from the first run on an H200 (README, "On a GPU"): what that run
# measured is not repeated, what it left open comes first.
#
# Phase 1, one process at a time (these are the timings to quote):
#   1. s/step and peak memory of the default pipeline vs size, 128 ... 2048, fp32 (measured on the
#      H200 already: on a GPU only when SCALING_S=seconds is set, e.g. SCALING_S=30)
#   2. the default pipeline on full-size F16 and kodim02 (sigma 25) as a user calls denoise(),
#      after a warm-up (dip_speed.py --default-only): each plane whole, as the GPU default fits it
#   3. the same two images in tiles of 288 px (--tile-size 288, the CPU default's capacity rule)
#   4. seed ensembles K = 1, 2, 4 (one batched vmap pass), F16 crop of 256 px
# Phase 2, quality only, several processes sharing the GPU (their times are contended: do not
# quote them as speed):
#   5. the paper recipe (oracle stop) on the Set9 crops of 256 px not yet run on a GPU
#   6. the paper recipe (oracle stop) on the full-size Set9 images not yet run, in three processes
#   7. full-size inpainting set (vase, library): default vs recipe (recipe cut at 60 s)
#   8. the paper's 50 %-missing-pixel protocol on the other four Table-1 images of Set12
#   9. the zoomed crops of must-show 6 at full size: noisy / default / recipe (oracle stop, whole
#      image, cut at 150 s) / clean, F16 and kodim02 in one process each (crops-*.png, the results
#      as .npy in crops/; limit 280 s: the PNG is written once both fits are done)
# CPU smoke run (tiny, to check the script itself; phase 2 on one thread a process, since 8
# processes of 2 OpenMP threads each on a few cores slow each other down many times over):
#   SMOKE=1 bash benchmarks/gpu_check.sh
set -u
DATA=${1:-../shared/data}
OUT=${2:-benchmarks/results/gpu}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
here=$(cd "$(dirname "$0")" && pwd)
export PYTHONUNBUFFERED=1

if [ "${SMOKE:-0}" = "1" ]; then
    DEV=cpu; FULL="--size 96"; S256="--size 40"; SCALE=64,96; TILE=64
    T1=60; T2=60; T3=60; T4=60; T5=120; T6=120; T7=120; T8=120; T9=120; P2T=1  # 8 processes on a few cores
    CAP="--max-iterations 40"; PCAP="--paper-iterations 30"
    EEXTRA="--size 48 --images F16 --iterations 20"
    QEXTRA="--size 48 --max-iterations 40"
    TIMED=F16; FULL_A=F16; FULL_B=House; FULL_C=Lena; R256=F16
    Q_A=01_C.man; Q_B=02_House; INP="--images vase"
    CROPS="--size 64 --window 32 --recipe-iterations 30"; CROP_IMGS=F16
else
    python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
        echo "gpu_check: no CUDA GPU visible to torch; nothing to check" >&2; exit 2; }
    DEV=cuda; FULL="--full"; S256="--size 256"; SCALE=128,256,512,1024,2048; TILE=288
    T1=${SCALING_S:-0}; T2=90; T3=150; T4=90; T5=220; T6=220; T7=220; T8=220; T9=280; P2T=2
    CAP=""; PCAP=""; EEXTRA="--size 256 --images F16"; QEXTRA="--size 0"
    TIMED=F16,kodim02; FULL_A=House,Lena; FULL_B=Baboon,kodim01; FULL_C=kodim03,kodim12
    R256=House,F16,kodim02
    Q_A=01_C.man,10_Boat; Q_B=11_Man,12_Couple; INP="--images vase,library"
    CROPS="--size 0 --window 64 --recipe-max-seconds 150"; CROP_IMGS="F16 kodim02"
fi

{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
    python -c "import torch; print('torch', torch.__version__)"

    if [ "$T1" -gt 0 ]; then
        echo "== 1. s/step and memory vs size, fp32 (limit ${T1}s)"
        timeout "$T1" python "$here/dip_speed.py" --device $DEV --scaling $SCALE --scaling-steps 20 \
            --out "$OUT/scaling.json"
    fi

    echo "== 2. default pipeline, full size, each plane whole (limit ${T2}s)"
    timeout "$T2" python "$here/dip_speed.py" --data "$DATA" $FULL --device $DEV --cases denoise \
        --default-only --tile-size 0 --images $TIMED $CAP --out "$OUT/default-whole.json"

    echo "== 3. default pipeline, full size, tiles of ${TILE} px (limit ${T3}s)"
    timeout "$T3" python "$here/dip_speed.py" --data "$DATA" $FULL --device $DEV --cases denoise \
        --default-only --tile-size $TILE --images $TIMED $CAP --out "$OUT/default-tiles.json"

    echo "== 4. seed ensembles K = 1, 2, 4 (limit ${T4}s)"
    timeout "$T4" python "$here/dip_ensemble.py" --data "$DATA" --device $DEV $EEXTRA \
        --out "$OUT/ensemble.json"

    echo "== phase 2: quality runs in parallel (limits ${T5}-${T9}s); logs in $OUT/p2-*.log"
    OMP_NUM_THREADS=$P2T timeout "$T5" python "$here/dip_speed.py" --data "$DATA" $S256 --device $DEV \
        --cases denoise --paper-only --paper-guard 300 $PCAP --images $R256 --out "$OUT/recipe-256.json" \
        >"$OUT/p2-recipe256.log" 2>&1 &
    for part in A B C; do
        eval "imgs=\$FULL_$part"
        OMP_NUM_THREADS=$P2T timeout "$T6" python "$here/dip_speed.py" --data "$DATA" $FULL --device $DEV \
            --cases denoise --paper-only --paper-guard 300 $PCAP --images "$imgs" \
            --out "$OUT/recipe-full-$part.json" >"$OUT/p2-recipefull$part.log" 2>&1 &
    done
    OMP_NUM_THREADS=$P2T timeout "$T7" python "$here/dip_speed.py" --data "$DATA" $FULL --device $DEV \
        --cases inpaint --paper-max-seconds 60 $PCAP $CAP $INP --out "$OUT/inpaint-full.json" \
        >"$OUT/p2-inpaint.log" 2>&1 &
    OMP_NUM_THREADS=$P2T timeout "$T8" python "$here/dip_quality.py" --data "$DATA" --cases set12-50 $QEXTRA \
        --images $Q_A --out "$OUT/missing-a.json" >"$OUT/p2-missing-a.log" 2>&1 &
    OMP_NUM_THREADS=$P2T timeout "$T8" python "$here/dip_quality.py" --data "$DATA" --cases set12-50 $QEXTRA \
        --images $Q_B --out "$OUT/missing-b.json" >"$OUT/p2-missing-b.log" 2>&1 &
    for img in $CROP_IMGS; do
        OMP_NUM_THREADS=$P2T timeout "$T9" python "$here/dip_crops.py" --data "$DATA" $CROPS --device $DEV \
            --images "$img" --variant default --variant recipe --save "$OUT/crops" --out "$OUT/crops-$img.png" \
            >"$OUT/p2-crops-$img.log" 2>&1 &
    done
    wait
    for f in "$OUT"/p2-*.log; do echo "--- $f"; grep -v '^ *step\|^  default' "$f" | tail -n 14; done
    date -u
} 2>&1 | tee "$LOG"
echo "gpu_check: results in $OUT"
