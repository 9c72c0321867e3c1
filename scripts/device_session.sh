#!/usr/bin/env bash
# The GPU checks of one device session, in one go (about 4 minutes on an
# H100 or H200): the planner's GEMM model against real BF16 GEMMs of the
# layout it predicts for that GPU (scripts/gemm_bench.py), then the node
# agent on the real GPU through NVML with a CUDA PyTorch job launched
# through a control plane (scripts/device_agent_check.sh). The machine needs
# python3 with CUDA PyTorch and either Go or a prebuilt bin/gpucloud
# (go build -o bin/gpucloud ./cmd/gpucloud, carried along).
#
#   OUT=dir scripts/device_session.sh
#
# Writes at most six files to $OUT: machine.txt, gemm.txt, gemm.json,
# agent.txt, agent-check.tgz (every file the agent check wrote), rc.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
O=${OUT:-./device-out}
mkdir -p "$O"
{
	nvidia-smi
	python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))'
	ldd --version | head -1
	command -v go curl || true
} >"$O/machine.txt" 2>&1
case "$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)" in
*H200*) shapes=scripts/gemm_shapes/h200-llama3-70b.json ;;
*) shapes=scripts/gemm_shapes/h100-gpt3-175b.json ;;
esac
echo "shapes: $shapes" >"$O/gemm.txt"
timeout 240 python3 scripts/gemm_bench.py "$shapes" --soak 15 --out "$O/gemm.json" >>"$O/gemm.txt" 2>&1
gemm=$?
timeout 300 bash scripts/device_agent_check.sh /tmp/agent-check >"$O/agent.txt" 2>&1
agent=$?
tar czf "$O/agent-check.tgz" -C /tmp/agent-check . 2>/dev/null
echo "gemm_bench rc=$gemm device_agent_check rc=$agent" | tee "$O/rc.txt"
