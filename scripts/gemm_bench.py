#!/usr/bin/env python3
"""Time the BF16 GEMMs the planner assumes and compare them with its model.

The planner (internal/plan, `gpucloud plan`) predicts each GEMM's speed from
one measured constant per GPU (the sustained matmul efficiency, MatmulEff in
internal/plan/constants.go) and a tile/wave-quantisation model (gemm.go).
This script measures the same shapes on a real GPU so that a session with a
GPU can check both:

  go run ./cmd/gpucloud plan --model gpt3-175b --gpu h100 --gpus 1024 \
      --global-batch 1536 --tp 8 --pp 8 --dp 16 --gemms > shapes.json
  python3 scripts/gemm_bench.py shapes.json --out gemm-result.json

scripts/gemm_shapes/ holds such files for the A100 validation rows (Megatron
SC'21 Table 1: the 18.4B and 1T runs) and for H100 and H200 layouts. Without a
shapes file it times a built-in list (no predictions). `--dry-run` prints the shapes
and the predictions without touching a GPU (works without torch).

Method: BF16 inputs with random values (zeros draw less power and read
fast), warm-up, then CUDA-event timing of back-to-back launches. Before the
shapes, a large GEMM runs for --soak seconds so that the GPU is at its
power-limited steady clock, as in training (the MSMF regime of Bekman's
mamf-finder); the soak's own TFLOP/s is reported as the sustained ceiling to
compare with MatmulEff x peak.
"""

import argparse
import json
import sys
import time

# Shapes of one layer of the SC'21 validation runs (tp=8, microbatch 1,
# seq 2048) and a large square reference. m, n, k, batch.
BUILTIN = {
    "gpu": "A100-80GB",
    "peak_bf16_tflops": 312.0,
    "matmul_eff": 0.73,
    "gemms": [
        {"name": "ref.8192^3", "m": 8192, "n": 8192, "k": 8192, "batch": 1},
        {"name": "gpt-18.4B.qkv.fwd", "m": 2048, "n": 2304, "k": 6144, "batch": 1},
        {"name": "gpt-18.4B.attn_out.fwd", "m": 2048, "n": 6144, "k": 768, "batch": 1},
        {"name": "gpt-18.4B.mlp_in.wgrad", "m": 6144, "n": 3072, "k": 2048, "batch": 1},
        {"name": "gpt-175B.qkv.fwd", "m": 2048, "n": 4608, "k": 12288, "batch": 1},
        {"name": "gpt-175B.mlp_out.fwd", "m": 2048, "n": 12288, "k": 6144, "batch": 1},
        {"name": "gpt-1T.qkv.fwd", "m": 2048, "n": 9600, "k": 25600, "batch": 1},
        {"name": "gpt-1T.attn_out.dgrad", "m": 2048, "n": 3200, "k": 25600, "batch": 1},
        {"name": "gpt-1T.mlp_in.wgrad", "m": 25600, "n": 12800, "k": 2048, "batch": 1},
        {"name": "gpt-1T.attn_scores", "m": 2048, "n": 2048, "k": 160, "batch": 20},
    ],
}


def load(path):
    if path is None:
        return BUILTIN
    with open(path) as f:
        d = json.load(f)
    if "gemms" not in d:
        sys.exit(f"{path}: no 'gemms' list (make it with gpucloud plan ... --gemms)")
    return d


def flops(g):
    return 2.0 * g["m"] * g["n"] * g["k"] * g.get("batch", 1)


def time_gemm(torch, g, iters, device):
    m, n, k, b = g["m"], g["n"], g["k"], g.get("batch", 1)
    if b > 1:
        a = torch.randn(b, m, k, device=device, dtype=torch.bfloat16)
        w = torch.randn(b, k, n, device=device, dtype=torch.bfloat16)
        op = lambda: torch.bmm(a, w)
    else:
        a = torch.randn(m, k, device=device, dtype=torch.bfloat16)
        w = torch.randn(k, n, device=device, dtype=torch.bfloat16)
        op = lambda: torch.mm(a, w)
    for _ in range(10):
        op()
    torch.cuda.synchronize()
    start = torch.cuda.Event(enable_timing=True)
    end = torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        op()
    end.record()
    torch.cuda.synchronize()
    sec = start.elapsed_time(end) / 1e3 / iters
    return flops(g) / sec / 1e12


def soak(torch, seconds, device):
    """Run 8192^3 GEMMs until the clock settles; return their TFLOP/s."""
    n = 8192
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    w = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    t0 = time.time()
    last = 0.0
    while time.time() - t0 < seconds:
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(50):
            torch.mm(a, w)
        end.record()
        torch.cuda.synchronize()
        last = 2.0 * n**3 * 50 / (start.elapsed_time(end) / 1e3) / 1e12
    return last


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("shapes", nargs="?", help="JSON from `gpucloud plan ... --gemms` (default: built-in shapes)")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--soak", type=float, default=20.0, help="seconds of large GEMMs first (0: none)")
    ap.add_argument("--out", help="write the results as JSON here")
    ap.add_argument("--dry-run", action="store_true", help="list the shapes and predictions only")
    args = ap.parse_args()
    d = load(args.shapes)
    peak = float(d.get("peak_bf16_tflops", 0))
    eff = float(d.get("matmul_eff", 0))

    if args.dry_run:
        for g in d["gemms"]:
            print(f"{g['name']:28s} {g['m']:6d} x {g['n']:6d} x {g['k']:6d} batch {g.get('batch', 1):4d}"
                  f"  predicted {g.get('predicted_tflops', float('nan')):7.1f} TFLOP/s")
        return 0

    try:
        import torch
    except ImportError:
        sys.exit("gemm_bench.py needs PyTorch with CUDA (pip install torch)")
    if not torch.cuda.is_available():
        sys.exit("gemm_bench.py: no CUDA device")
    device = torch.device("cuda")
    name = torch.cuda.get_device_name(device)
    want = str(d.get("gpu", "")).split("-")[0].upper()
    if want and want not in name.upper():
        print(f"warning: the shapes were predicted for {d.get('gpu')}, this is {name}: compare ratios with care",
              file=sys.stderr)
    sustained = soak(torch, args.soak, device) if args.soak > 0 else None

    rows = []
    print(f"device: {name}; planner GPU {d.get('gpu')}, peak {peak} TFLOP/s, MatmulEff {eff}")
    if sustained:
        print(f"sustained 8192^3 after {args.soak:.0f} s soak: {sustained:.1f} TFLOP/s"
              + (f" = {sustained / peak:.3f} of peak (planner: {eff:.3f})" if peak else ""))
    print(f"{'gemm':28s} {'m':>6s} {'n':>6s} {'k':>6s} {'b':>4s} {'measured':>9s} {'predicted':>9s} {'ratio':>6s}")
    for g in d["gemms"]:
        tf = time_gemm(torch, g, args.iters, device)
        pred = g.get("predicted_tflops")
        ratio = tf / pred if pred else float("nan")
        note = " (timed with a BF16 output; the FP32-accumulate epilogue is not reproduced)" if g.get("out_bytes") == 8 else ""
        print(f"{g['name']:28s} {g['m']:6d} {g['n']:6d} {g['k']:6d} {g.get('batch', 1):4d} {tf:9.1f} "
              f"{pred if pred else float('nan'):9.1f} {ratio:6.2f}{note}")
        rows.append(dict(g, measured_tflops=tf, measured_eff=tf / peak if peak else None))
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"device": name, "torch": torch.__version__, "cuda": torch.version.cuda,
                       "sustained_tflops": sustained, "planner": {k: v for k, v in d.items() if k != "gemms"},
                       "gemms": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
