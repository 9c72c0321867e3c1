#!/usr/bin/env bash
# Device check of the node agent, for a machine with an NVIDIA GPU (at most
# 5 minutes). It builds gpucloud, runs `gpucloud agent discover` against the
# real GPU through NVML, then a control plane and an agent on this machine
# (NVML, no --fake-gpus), and launches a one-GPU CUDA PyTorch job
# (examples/ddp/train.py --backend nccl) through them.
#
#   scripts/device_agent_check.sh [OUT_DIR]     # OUT_DIR defaults to $OUT or ./device-check
#
# REHEARSAL=1 runs it on a machine without a GPU (emulated GPUs, CPU gloo
# job) to check the script itself.
#
# Everything it learns goes to OUT_DIR: discover.txt/json, node.json,
# job.json, job.log, server.log, agent.log, summary.txt. Exit 0 when every
# step passed; the first failed step is named in summary.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-./device-check}}
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
WORK=$(mktemp -d /tmp/gpucloud-device-XXXXXX)
SUMMARY="$OUT_DIR/summary.txt"
: >"$SUMMARY"
PIDS=()
export PATH="$PATH:/usr/local/go/bin:$HOME/go/bin"
REHEARSAL=${REHEARSAL:-}
FAKE=()
[ -n "$REHEARSAL" ] && FAKE=(--fake-gpus 1 --gpu-model H100-80GB)

say() { echo "$*" | tee -a "$SUMMARY"; }
# Machines without curl (CUDA images often lack it): the few options used
# here (-s -S -f -H -X -d URL), through Python's urllib.
if ! command -v curl >/dev/null; then
	curl() {
		python3 - "$@" <<'PY'
import sys, urllib.request, urllib.error
args, hdr, method, data, fail, url = sys.argv[1:], {}, None, None, False, None
i = 0
while i < len(args):
    a = args[i]
    if a in ("-H", "-X", "-d"):
        v = args[i + 1]; i += 1
        if a == "-H":
            k, _, val = v.partition(":"); hdr[k.strip()] = val.strip()
        elif a == "-X":
            method = v
        else:
            data = v.encode()
    elif a.startswith("-"):
        fail = fail or "f" in a
    else:
        url = a
    i += 1
req = urllib.request.Request(url, data=data, headers=hdr, method=method)
try:
    with urllib.request.urlopen(req, timeout=30) as r:
        sys.stdout.buffer.write(r.read())
except urllib.error.HTTPError as e:
    if fail:
        sys.exit(22)
    sys.stdout.buffer.write(e.read())
except Exception as e:
    print("curl (python):", e, file=sys.stderr)
    sys.exit(7)
PY
	}
fi
cleanup() {
	for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
	sleep 1
	# Ranks the agent left (it leaves them on purpose when it stops).
	for f in "$WORK"/agent/jobs/*/gen-*/rank-*/shim.json; do
		[ -f "$f" ] && kill -KILL -- "-$(sed -n 's/.*"pid":\([0-9]*\).*/\1/p' "$f")" 2>/dev/null
	done
	for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; done
	cp "$WORK"/*.log "$OUT_DIR"/ 2>/dev/null
	rm -rf "$WORK"
}
trap cleanup EXIT
fail() { say "FAIL: $*"; exit 1; }
step() { say "== $* ($(date +%T))"; }

step "machine"
{ uname -a; nvidia-smi -L 2>&1 || echo "nvidia-smi: not found"; nvidia-smi --query-gpu=index,name,memory.total,pci.bus_id,driver_version --format=csv 2>&1; } | tee -a "$SUMMARY"

step "build"
BIN=""
if command -v go >/dev/null; then
	CGO_ENABLED=1 CGO_CFLAGS=-Wno-deprecated-declarations timeout 180 go build -buildvcs=false -o "$WORK/gpucloud" ./cmd/gpucloud >"$OUT_DIR/build.txt" 2>&1 \
		&& BIN="$WORK/gpucloud" || { cat "$OUT_DIR/build.txt"; fail "go build ./cmd/gpucloud"; }
elif [ -x bin/gpucloud ]; then
	BIN=$(pwd)/bin/gpucloud # carried prebuilt (cgo: needs a glibc as new as the build machine's)
else
	fail "no Go toolchain and no prebuilt bin/gpucloud"
fi
say "binary: $BIN"

step "NVML discovery"
timeout 60 "$BIN" agent discover "${FAKE[@]}" >"$OUT_DIR/discover.txt" 2>&1
rc=$?
cat "$OUT_DIR/discover.txt" | tee -a "$SUMMARY"
[ $rc -eq 0 ] || fail "gpucloud agent discover exited $rc (3: no GPU through NVML; 4: unhealthy)"
timeout 60 "$BIN" agent discover "${FAKE[@]}" --json >"$OUT_DIR/discover.json" 2>&1 || fail "discover --json"
if [ -z "$REHEARSAL" ]; then
	grep -q '"source": "nvml"' "$OUT_DIR/discover.json" || fail "the GPUs do not come from NVML"
	grep -q '"emulated": true' "$OUT_DIR/discover.json" && fail "NVML GPUs marked emulated"
fi
NGPU=$(grep -c '"uuid": "GPU-' "$OUT_DIR/discover.json")
say "NVML GPUs: $NGPU"

step "control plane"
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
API_PORT=$(port)
URL="http://127.0.0.1:$API_PORT"
"$BIN" server --listen "127.0.0.1:$API_PORT" --data-dir "$WORK/server" \
	--etcd-client-url "http://127.0.0.1:$(port)" --etcd-peer-url "http://127.0.0.1:$(port)" \
	--node-lease-ttl 10s --heartbeat-interval 2s --unsafe-no-fsync --log-level warn >"$WORK/server.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do [ -s "$WORK/server/admin.token" ] && curl -sf "$URL/readyz" >/dev/null && break; sleep 0.3; done
[ -s "$WORK/server/admin.token" ] || fail "server not up (server.log)"
ADMIN=$(cat "$WORK/server/admin.token")
api() { curl -sS -H "Authorization: Bearer $1" -H 'Content-Type: application/json' "${@:2}"; }
AGENT_TOKEN=$(api "$ADMIN" -X POST "$URL/v1/tokens" -d '{"role":"agent","name":"device-check"}' | sed -n 's/.*"token":"\([^"]*\)".*/\1/p')
[ -n "$AGENT_TOKEN" ] || fail "no agent token"

step "agent on the real GPU (NVML)"
"$BIN" agent --server "$URL" --token "$AGENT_TOKEN" --node-name gpu-node --address 127.0.0.1 \
	--data-dir "$WORK/agent" --grace-period 5s --health-interval 10s --log-level debug "${FAKE[@]}" >"$WORK/agent.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do
	api "$ADMIN" "$URL/v1/nodes/gpu-node" >"$OUT_DIR/node.json" 2>/dev/null
	grep -q '"phase":"Ready"' "$OUT_DIR/node.json" && break
	sleep 0.3
done
grep -q '"phase":"Ready"' "$OUT_DIR/node.json" || fail "node not Ready (agent.log)"
[ -z "$REHEARSAL" ] && grep -q '"emulated":true' "$OUT_DIR/node.json" && fail "the node registered emulated GPUs"
say "node: $(grep -o '"gpus":[0-9]*' "$OUT_DIR/node.json" | tail -1), unhealthy: $(grep -o '"unhealthy":\[[^]]*\]' "$OUT_DIR/node.json" || echo none)"

step "one-GPU CUDA PyTorch job"
PY=""
BACKEND=nccl
DEVICE=cuda:0
if [ -n "$REHEARSAL" ]; then BACKEND=gloo DEVICE=cpu PY=/usr/bin/python3; fi
for p in ${REHEARSAL:+/nonexistent} python3 /usr/bin/python3 /opt/conda/bin/python /usr/local/bin/python3; do
	if command -v "$p" >/dev/null && timeout 120 "$p" -c 'import torch,sys; sys.exit(0 if torch.cuda.is_available() and torch.distributed.is_nccl_available() else 1)' 2>/dev/null; then
		PY=$(command -v "$p"); break
	fi
done
[ -n "$PY" ] || fail "no python with CUDA-enabled torch and NCCL here (Debian's python3-torch is CPU-only); GPU discovery and registration passed"
say "python: $PY ($("$PY" -c 'import torch; print(torch.__version__, torch.version.cuda)'))"
JOB=$(api "$ADMIN" -X POST "$URL/v1/jobs" -d "{\"apiVersion\":\"gpucloud/v1\",\"kind\":\"Job\",\"metadata\":{\"name\":\"cuda-ddp\"},
  \"spec\":{\"replicas\":1,\"gpusPerReplica\":1,\"launch\":\"per-gpu\",
  \"command\":[\"$PY\",\"$(pwd)/examples/ddp/train.py\",\"--backend\",\"$BACKEND\",\"--steps\",\"200\",\"--ckpt-every\",\"50\"]}}" | sed -n 's/.*"id":"\([^"]*\)".*/\1/p' | head -1)
[ -n "$JOB" ] || fail "job not accepted"
say "job: $JOB"
PHASE=""
for _ in $(seq 400); do
	api "$ADMIN" "$URL/v1/jobs/$JOB" >"$OUT_DIR/job.json"
	PHASE=$(sed -n 's/.*"phase":"\([A-Za-z]*\)".*/\1/p' "$OUT_DIR/job.json" | head -1)
	case "$PHASE" in Succeeded | Failed | Cancelled) break ;; esac
	sleep 0.5
done
sleep 1 # the relay ships the last lines
api "$ADMIN" "$URL/v1/jobs/$JOB/logs?rank=0" >"$OUT_DIR/job.log"
tail -5 "$OUT_DIR/job.log" | tee -a "$SUMMARY"
[ "$PHASE" = Succeeded ] || fail "job ended $PHASE (job.json, job.log, agent.log)"
grep -q "device=$DEVICE" "$OUT_DIR/job.log" || fail "the rank did not run on $DEVICE"
grep -q "cuda_visible_devices=[0-9]" "$OUT_DIR/job.log" || fail "CUDA_VISIBLE_DEVICES not set"
FIRST=$(grep -m1 '^step 1 loss' "$OUT_DIR/job.log" | awk '{print $4}')
LAST=$(grep '^step 200 loss' "$OUT_DIR/job.log" | awk '{print $4}')
python3 -c "import sys; sys.exit(0 if float('$LAST') < float('$FIRST')/4 else 1)" || fail "loss did not fall: $FIRST -> $LAST"
say "loss $FIRST -> $LAST"
say "PASS: NVML discovery, registration of real GPUs, and a CUDA job launched through the agent"
