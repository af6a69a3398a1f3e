#!/usr/bin/env bash
# The GPU check through the device tool, in two calls, because one call carries at most 64 MiB:
#   call 1 (carry .whl .gpu/a): install the wheels the device image lacks (optuna, ...), keep the first
#          half of CIFAR-10, and rehearse gpu.py at the real data size on a stand-in (timings only);
#   call 2 (carry .gpu/b, on the same warm machine): rebuild the exact data set and run gpu.py.
# Made here with:
#   python benchmarks/cifar_carry.py pack --data-dir ../shared/data --out .gpu/parts   (then split into .gpu/a, .gpu/b)
#   pip download --no-deps ... -d .whl optuna alembic SQLAlchemy Mako colorlog cmaes plotly   (device README)
#   (cd /tmp/p && unzip -q plotly-*.whl && tar cJf .whl/plotly-7.1.0.tar.xz .), and the plotly wheel removed
# Usage on the device machine:  bash benchmarks/gpu_device.sh rehearse | run [gpu.py options]
set -euo pipefail
stage=${1:?rehearse or run}; shift
export PYTHONUNBUFFERED=1 PYTHONPATH=/tmp/site:$PWD
out=${OUT:-/tmp/out}
install_wheels() {  # plotly travels as an unpacked wheel in .tar.xz (4 MB, not 10): the call carries 64 MiB at most
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  for packed in .whl/*.tar.xz; do tar xJf "$packed" -C /tmp/site; done
}
case $stage in
  rehearse)
    install_wheels
    mkdir -p /tmp/carry && cp -r .gpu/a /tmp/carry/
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c "import torch, optuna, plotly; print('torch', torch.__version__, 'optuna', optuna.__version__, 'cuda', torch.cuda.is_available())"
    python3 benchmarks/cifar_carry.py unpack --parts /tmp/carry/a --stand-in --out /tmp/standin
    python3 benchmarks/gpu.py --data-dir /tmp/standin --out /tmp/rehearsal --work /tmp/rehearsal-work \
      --epochs 1 --trials 4 --epochs-per-trial 0.5 --final-epochs 0.5 "$@" 2>&1 | tee "$out/rehearsal.log"
    cp /tmp/rehearsal/gpu-summary.json "$out/rehearsal-summary.json"
    ;;
  run)
    test -d /tmp/site && test -d /tmp/carry/a || { echo "error: run the rehearse stage first, on the same machine"; exit 2; }
    python3 benchmarks/cifar_carry.py unpack --parts /tmp/carry/a .gpu/b --out /tmp/data
    python3 benchmarks/gpu.py --data-dir /tmp/data --out "$out" --work /tmp/work --timings /tmp/rehearsal/gpu-summary.json "$@" 2>&1 | tee "$out/gpu.log"
    ;;
  *) echo "error: unknown stage $stage (rehearse or run)"; exit 2 ;;
esac
