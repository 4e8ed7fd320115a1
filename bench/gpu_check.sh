#!/usr/bin/env bash
# Run bench/gpu_check.py from the repository root with the project's .venv (else python3); arguments pass through.
#   bench/gpu_check.sh                        # CUDA, bf16 then fp32; without CUDA: one line, nothing run, exit 0
#   bench/gpu_check.sh --json figures.json    # also write every figure as JSON
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python=python3
if [[ -x .venv/bin/python ]]; then
    python=.venv/bin/python
fi
exec "$python" bench/gpu_check.py "$@"
