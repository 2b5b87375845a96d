#!/usr/bin/env bash
# One-shot GPU check of napari-deep-prior, sized for at most 10 minutes on one H100/H200.
#
#   bash benchmarks/gpu_check.sh [DATA_DIR] [OUT_DIR]
#
# DATA_DIR holds set9/, set12/ and dip/ (default ../shared/data); OUT_DIR receives the JSON
# files and a log (default benchmarks/results/gpu).  Every part has its own time limit, and
# the benchmarks save their JSON after every image, so a part cut by its limit still leaves
# the images it finished.  Parts:
#   1. speed benchmark, full size, Set9 sigma = 25: paper recipe (oracle stop) vs default
#   2. the same default pipeline under bf16 autocast (amp=bf16), paper run reused from 1
#   3. speed benchmark, full size, inpainting set (kate, vase, library)
#   4. the paper's 50 %-missing-pixel protocol on the eight Table-1 images of Set12
#      (default inpaint preset; paper DIP mean 33.52 dB)
#   5. seconds per step and peak memory vs size, 128 ... 2048, fp32 and bf16
#   6. seed ensembles K = 1, 2, 4 (one batched vmap pass on the GPU), Set9 crops of 256 px
# CPU smoke run (tiny, to check the script itself): SMOKE=1 bash benchmarks/gpu_check.sh
set -u
DATA=${1:-../shared/data}
OUT=${2:-benchmarks/results/gpu}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
here=$(cd "$(dirname "$0")" && pwd)

if [ "${SMOKE:-0}" = "1" ]; then
    DEV=cpu; SIZE="--size 48"; SCALE=64,96; T1=60; T2=30; T3=60; T4=60; T5=60; T6=60
    EEXTRA="--size 48 --images F16 --iterations 20"
    # (b) capped at 200 steps: the default inpaint preset alone runs >= 1000 (ES start 500 + patience 500)
    EXTRA="--paper-iterations 30 --max-iterations 200 --images F16"
    EXTRA_I="--paper-iterations 30 --max-iterations 200 --images vase"
    QEXTRA="--images 01_C.man --size 48 --max-iterations 200"
else
    python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
        echo "gpu_check: no CUDA GPU visible to torch; nothing to check" >&2; exit 2; }
    DEV=cuda; SIZE="--full"; SCALE=128,256,512,1024,2048; T1=190; T2=60; T3=110; T4=120; T5=40; T6=40
    EEXTRA="--size 256"
    EXTRA=""; EXTRA_I="--paper-max-seconds 35"; QEXTRA="--size 0"
fi

{
    date -u
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
    python -c "import torch; print('torch', torch.__version__)"

    echo "== 1. speed, Set9 sigma=25 (limit ${T1}s)"
    timeout "$T1" python "$here/dip_speed.py" --data "$DATA" $SIZE --device $DEV --cases denoise \
        --paper-guard 300 $EXTRA --out "$OUT/speed-set9.json"

    echo "== 2. default pipeline under bf16 autocast (limit ${T2}s)"
    timeout "$T2" python "$here/dip_speed.py" --data "$DATA" $SIZE --device $DEV --cases denoise \
        --amp bf16 --reuse-paper "$OUT/speed-set9.json" $EXTRA --out "$OUT/speed-set9-bf16.json"

    echo "== 3. speed, inpainting set (limit ${T3}s)"
    timeout "$T3" python "$here/dip_speed.py" --data "$DATA" $SIZE --device $DEV --cases inpaint \
        $EXTRA_I --out "$OUT/speed-inpaint.json"

    echo "== 4. 50 % missing pixels, Set12 Table-1 images (limit ${T4}s)"
    timeout "$T4" python "$here/dip_quality.py" --data "$DATA" --cases set12-50 $QEXTRA \
        --out "$OUT/missing-pixels-set12.json"

    echo "== 5. s/step and memory vs size (limit ${T5}s)"
    timeout "$T5" python "$here/dip_speed.py" --device $DEV --scaling $SCALE --scaling-steps 20 \
        --out "$OUT/scaling.json"
    timeout "$T5" python "$here/dip_speed.py" --device $DEV --scaling $SCALE --scaling-steps 20 \
        --amp bf16 --out "$OUT/scaling-bf16.json"

    echo "== 6. seed ensembles K = 1, 2, 4 (limit ${T6}s)"
    timeout "$T6" python "$here/dip_ensemble.py" --data "$DATA" --device $DEV $EEXTRA \
        --out "$OUT/ensemble.json"
    date -u
} 2>&1 | tee "$LOG"
echo "gpu_check: results in $OUT"
