#!/bin/sh
# The GPU check on a machine with torch and a GPU but no network (python -m bench.gpu_check --help):
#   bench/gpu_check.sh PACK [--out DIR] [other options of python -m bench.gpu_check]
# PACK is a folder that `python -m bench.gpu_check --pack PACK` wrote on a machine with the project and a
# network: PACK/tokenizer, and PACK/wheels (the packages that machine lacks), which are installed here into a
# folder of their own, put before the system's packages, and never into the system's python.
# Run it from the repository's root.
set -eu
[ $# -ge 1 ] && [ -d "$1/tokenizer" ] || {
    echo "usage: $0 PACK [options]; PACK/tokenizer is missing" \
        "(write it with: python -m bench.gpu_check --pack PACK)" >&2
    exit 2
}
pack=$1
shift
python=${PYTHON:-python3}
if ls "$pack"/wheels/*.whl >/dev/null 2>&1; then
    site=$(mktemp -d)
    "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$site" "$pack"/wheels/*.whl
    PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    export PYTHONPATH
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
exec "$python" -m bench.gpu_check --tokenizer "$pack/tokenizer" "$@"
