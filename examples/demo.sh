#!/usr/bin/env bash
# `make demo`: a tour of trtcas on a throwaway cache in .demo/.
set -euo pipefail
cd "$(dirname "$0")/.."
export TRTCAS_CACHE_DIR="$PWD/.demo/cache"
rm -rf .demo && mkdir -p .demo
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

head -c 8000000 /dev/urandom > .demo/weights.bin
python - <<'PY'
import json; open(".demo/config.json", "w").write(json.dumps({"layers": [{"kind": "conv", "k": 3}] * 2000}))
PY
step trtcas cache put .demo/weights.bin
step trtcas cache put .demo/config.json
digest=$(trtcas cache put .demo/weights.bin)
step trtcas cache get "$digest" -o .demo/out/weights.bin
cmp .demo/weights.bin .demo/out/weights.bin && echo "round trip: identical bytes"
step trtcas cache stats
step trtcas cache verify
