#!/usr/bin/env bash
# Installs verl 0.9.1 and gradus's verifier dependencies into a venv of their own (default
# .venv-verl/ at the repository root; GRADUS_VERL_VENV=<folder> elsewhere), for the test that
# trains nothing but checks verl's own reward loader and dataset against a gradus curriculum
# (tests/pipeline/rewards/test_verl.py). gradus itself is not installed there: the test puts this
# checkout on verl's PYTHONPATH, so it always checks the code it runs with.
# Idempotent: a second run with unchanged requirements returns in about a second.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/stamp.sh
venv="${GRADUS_VERL_VENV:-.venv-verl}"
inputs=(pyproject.toml scripts/install_verl.sh scripts/stamp.sh)
if current "$venv/.gradus-install-verl" "${inputs[@]}"; then
  echo "gradus: $venv is up to date (verl)"
  exit 0
fi

[[ -x "$venv/bin/python" ]] || "${PYTHON:-python3}" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)

# The verifier's requirements exactly as pyproject.toml pins them, so labels and trainer reward
# run the same math-verify and reasoning-gym.
mapfile -t verifier < <("$venv/bin/python" - <<'PY'
import re, tomllib
for requirement in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]:
    if re.match(r"(math-verify|reasoning-gym)\b", requirement):
        print(requirement)
PY
)

echo "gradus: installing verl into $venv"
# CPU torch first, pinned: a bare torch requirement of verl's would pull a multi-GB CUDA build.
"${pip[@]}" install -q "torch==2.13.0"
"${pip[@]}" install -q "verl==0.9.1" pandas pyarrow datasets transformers "${verifier[@]}"

stamp "$venv/.gradus-install-verl" "${inputs[@]}"
echo "gradus: verl installed in $venv"
