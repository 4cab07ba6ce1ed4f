#!/usr/bin/env bash
# Wheels of what hpc_tune needs beyond a GPU machine's own Python (one with torch, numpy, scipy, matplotlib,
# scikit-learn, jinja2, click, rich, pyyaml and pytest already there, but no Optuna), for a machine that can
# reach no package index: downloaded here into .whl/ (ignored by git) for CPython 3.12 on x86-64 Linux, and
# installed there by benchmarks/gpu_check.sh. Usage: bash scripts/device-wheels.sh [PYTHON_VERSION]
set -euo pipefail
cd "$(dirname "$0")/.."
version="${1:-3.12}"
mkdir -p .whl
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 \
    manylinux1_x86_64 manylinux_2_34_x86_64 manylinux_2_31_x86_64 manylinux_2_24_x86_64; do
    platforms+=(--platform "$p")
done
# Optuna and what it needs, the storage and config stack, submitit; pure-Python ones resolve to py3 wheels.
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$version" --implementation cp \
    "${platforms[@]}" -d .whl \
    "optuna>=5.0,<6" alembic colorlog mako "sqlalchemy>=2.0" greenlet "psycopg2-binary>=2.9" \
    "pydantic>=2.6" pydantic-core annotated-types typing-inspection "ruamel.yaml>=0.18" \
    "tenacity>=8.2" "submitit>=1.5" cloudpickle
echo "device-wheels: $(ls .whl | wc -l) wheels in .whl/ ($(du -sh .whl | cut -f1)); carry .whl to the device"
