#!/usr/bin/env bash
# The CUDA path on a real GPU, in one script: train the VGG16 FCN-8s a few hundred updates with AMP (fp16)
# on synthetic 500x375 images, predict a folder, export to ONNX, and run 2-process DDP with NCCL when the
# machine has two GPUs. Prints images/s and peak GPU memory of every step and writes them to
# $OUT/gpu_check.txt (OUT defaults to runs/gpu-check).
#
#   bash benchmarks/gpu_check.sh                 # with a CUDA build of torch 2.13 installed
#   UPDATES=50 bash benchmarks/gpu_check.sh      # shorter
#
# Needs: a CUDA build of PyTorch (the project's pinned CPU wheel has no CUDA), and fcnseg importable
# (pip install -e . in that environment, or PYTHONPATH=.). No weights are downloaded: the trunk starts
# from scratch, so the figures are of speed and memory, not of accuracy.
set -euo pipefail

PYTHON=${PYTHON:-python}
OUT=${OUT:-runs/gpu-check}
UPDATES=${UPDATES:-300}
IMAGES=${IMAGES:-120}
mkdir -p "$OUT"
REPORT="$OUT/gpu_check.txt"
: > "$REPORT"
say() { echo "$*" | tee -a "$REPORT"; }

"$PYTHON" - <<'EOF' | tee -a "$REPORT"
import torch
assert torch.cuda.is_available(), "no CUDA device: this script checks the GPU path"
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"cuda:{i} {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}, CUDA {torch.version.cuda}")
EOF
GPUS=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")

say "== data: $IMAGES synthetic 500x375 training images, 20 validation"
"$PYTHON" -m fcnseg make-synthetic "$OUT/data" --style shapes --num-train "$IMAGES" --num-val 20 --size 375x500

TRAIN_ARGS=(--preset paper-cvpr --arch fcn8s-atonce --backbone vgg16 --num-classes 6 --dataset synthetic
            --data-root "$OUT/data" --precision fp16 --device cuda --max-iter "$UPDATES"
            --set train.iter_size=1 --batch-size 4 --set train.lr=1e-10 --val-every "$UPDATES"
            --checkpoint-every "$UPDATES" --no-progress --workers 4)

say "== train: VGG16 FCN-8s (at once), fp16 autocast, batch 4, $UPDATES updates, 1 GPU"
start=$(date +%s.%N)
"$PYTHON" -m fcnseg train "${TRAIN_ARGS[@]}" --out "$OUT/train-1gpu" 2>&1 | tail -n 5 | tee -a "$REPORT"
end=$(date +%s.%N)
say "wall $(echo "$end - $start" | bc) s; images/s as the train log says above"

say "== peak memory of one training step and of prediction at 500x375 (torch.cuda.max_memory_allocated)"
"$PYTHON" - "$OUT" <<'EOF' | tee -a "$REPORT"
import sys, time, torch
from fcnseg.config import ModelConfig
from fcnseg.models import build_model
out = sys.argv[1]
model = build_model(ModelConfig(arch="fcn8s-atonce", backbone="vgg16", num_classes=6)).cuda()
opt = torch.optim.SGD(model.parameters(), lr=1e-10, momentum=0.99)
scaler = torch.amp.GradScaler("cuda")
x = torch.rand(4, 3, 375, 500, device="cuda") * 255
y = torch.randint(0, 6, (4, 375, 500), device="cuda")
for step in range(12):
    if step == 2:
        torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); t = time.perf_counter()
    with torch.autocast("cuda", dtype=torch.float16):
        loss = torch.nn.functional.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(opt); scaler.update()
torch.cuda.synchronize()
dt = (time.perf_counter() - t) / 10
print(f"train step, batch 4 at 375x500, fp16: {4 / dt:.1f} images/s, peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
model.eval()
with torch.inference_mode(), torch.autocast("cuda", dtype=torch.float16):
    for _ in range(3):
        model(x[:1])
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); t = time.perf_counter()
    for _ in range(20):
        model(x[:1])
    torch.cuda.synchronize()
dt = (time.perf_counter() - t) / 20
print(f"forward, 1 image at 375x500, fp16: {1 / dt:.1f} images/s, peak {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")
EOF

CKPT="$OUT/train-1gpu/checkpoints/last.pt"
say "== predict: the validation folder on the GPU (fp16)"
start=$(date +%s.%N)
"$PYTHON" -m fcnseg predict "$CKPT" "$OUT/data/JPEGImages" --out "$OUT/predictions" --device cuda --precision fp16 \
    --no-progress 2>&1 | tail -n 3 | tee -a "$REPORT"
end=$(date +%s.%N)
say "predicted $(ls "$OUT/data/JPEGImages" | wc -l) images in $(echo "$end - $start" | bc) s (model load included)"

say "== export: ONNX from the GPU-trained checkpoint, checked with ONNX Runtime"
"$PYTHON" -m fcnseg export "$CKPT" "$OUT/model.onnx" 2>&1 | tail -n 3 | tee -a "$REPORT" || say "export failed (see above)"

if [ "$GPUS" -ge 2 ]; then
    say "== DDP: 2 processes, NCCL, $UPDATES updates (global batch 8)"
    start=$(date +%s.%N)
    "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node=2 -m fcnseg train "${TRAIN_ARGS[@]}" \
        --out "$OUT/train-ddp" 2>&1 | tail -n 5 | tee -a "$REPORT"
    end=$(date +%s.%N)
    say "wall $(echo "$end - $start" | bc) s"
else
    say "== DDP: skipped, this machine has $GPUS GPU (2-process NCCL needs two)"
fi
say "report: $REPORT"
