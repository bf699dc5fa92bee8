#!/usr/bin/env bash
# Train the shipped models on a lent CUDA GPU (PyTorch or JAX there, no TensorFlow).
# Needs, in the working tree: .gpu/train.pack.npz and .gpu/test.pack.npz, made here with
#   simpsons dataset pack ../shared/data/simpsons/simpsons_dataset --out .gpu/train.pack.npz --quality 85
#   simpsons dataset pack ../shared/data/simpsons/kaggle_simpson_testset --out .gpu/test.pack.npz
# and the wheels Keras needs in .whl/ (keras, namex, optree). Results go to $OUT (or ./device-out).
# Usage: bash bench/device_train.sh STRONG_MINUTES ARTICLE_MINUTES (each a wall-clock budget from the start)
set -u
OUT=${OUT:-device-out}; mkdir -p "$OUT"
STRONG_MINUTES=${1:-6}; ARTICLE_MINUTES=${2:-6}
if ! python3 -c "import keras" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=src:${PYTHONPATH:-} KERAS_BACKEND=${KERAS_BACKEND:-torch} PYTHONUNBUFFERED=1 SIMPSONS_CACHE_DIR=/tmp/cache
nvidia-smi -L 2>/dev/null
python3 -c "import keras, torch; print('keras', keras.__version__, 'backend', keras.backend.backend(), 'torch', torch.__version__, torch.cuda.is_available())"
train() {  # name preset minutes extra...
  local name=$1 preset=$2 minutes=$3; shift 3
  python3 -m simpsons.cli train .gpu/train.pack.npz --preset "$preset" --test .gpu/test.pack.npz \
    --time-limit "$minutes" --out "/tmp/runs/$name" "$@" > "$OUT/$name.log" 2>&1
  cp "/tmp/runs/$name/model.simpsons" "$OUT/$name.simpsons"; cp "/tmp/runs/$name/history.csv" "$OUT/$name-history.csv"
}
started=$(date +%s)
EXTRA=${EXTRA:-}
train article article "$ARTICLE_MINUTES" $EXTRA &
# Size the cosine schedule to the time left: one probe epoch measures images/s.
python3 -m simpsons.cli train .gpu/train.pack.npz --preset strong --epochs 1 --out /tmp/runs/probe $EXTRA > "$OUT/probe.log" 2>&1
left=$(python3 -c "print($STRONG_MINUTES * 60 - ($(date +%s) - $started))")
epochs=$(python3 -c "
import csv, json
row = list(csv.DictReader(open('/tmp/runs/probe/history.csv')))[-1]
images = json.load(open('/tmp/runs/probe/run.json'))['train_images']
print(max(2, min(80, int(float(row['images_per_second']) * $left * 0.9 / images))))")
echo "strong: $epochs epochs in the $left s left"
train strong strong "$(python3 -c "print($left / 60)")" --epochs "$epochs" $EXTRA &
wait
echo "wall seconds: $(( $(date +%s) - started ))"
tail -n 12 "$OUT"/*.log
