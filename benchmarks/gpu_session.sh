#!/usr/bin/env bash
# Everything to run on a machine with a CUDA GPU, in one go, from the project root:
#   bash benchmarks/gpu_session.sh
# the GPU tests (CUDA against CPU, kernels per step, no host synchronisation in middle steps),
# then the GPU figures of benchmarks/targets.py and benchmarks/run.py, which rewrite their blocks
# of BENCHMARKS.md, then the local models on the GPU (benchmarks/models.py --cuda: LS on MNIST-5k
# against cfdm, ELS on the whole of Fashion-MNIST; printed, and written to $OUT/models_cuda.md).
# With $OUT set (a folder that is copied back), BENCHMARKS.md is copied there first.
set -euo pipefail
py=${PYTHON:-python3}
$py -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU visible to torch'; print(torch.cuda.get_device_name(0))"
$py -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_batched_path.py
$py benchmarks/targets.py --cuda
$py benchmarks/run.py --cuda
if [ -n "${OUT:-}" ]; then cp BENCHMARKS.md "$OUT/BENCHMARKS.md"; fi
$py benchmarks/models.py --cuda
