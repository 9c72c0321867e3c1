#!/usr/bin/env python3
"""A worker of the DeepSpeed-style example: data-parallel SGD with the
optimizer state partitioned across ranks, as ZeRO stage 1 does.

Every rank computes gradients on its own batch; the gradients are summed
across the gang (an all-reduce through rank 0 over TCP, standing in for
NCCL); each rank then updates only its partition of the parameters with its
partition of the momentum, and the partitions are gathered back (a second
all-reduce of the zero-padded pieces). Pure Python: emulated GPUs do.
"""

import argparse
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import gang  # noqa: E402

DIM = 8


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--step-time", type=float, default=0.1)
    p.add_argument("--lr", type=float, default=0.1)
    args = p.parse_args()

    r = gang.Rank()
    lo, hi = r.rank * DIM // r.world, (r.rank + 1) * DIM // r.world
    gang.log(f"{r}: owns optimizer state of parameters [{lo}, {hi})")
    group = gang.Group(r)

    true_w = [float(i + 1) for i in range(DIM)]
    ckpt = gang.load_checkpoint(r, f"rank{r.rank}.json")
    state = ckpt or {"step": 0, "w": [0.0] * DIM, "momentum": [0.0] * (hi - lo)}
    if ckpt:
        gang.log(f"resumed from step {state['step']}")
    gang.on_sigterm(lambda: gang.save_checkpoint(r, state, f"rank{r.rank}.json"))

    loss = float("nan")
    for step in range(state["step"], args.steps):
        rng = random.Random(step * 1000 + r.rank)
        w = state["w"]
        grad = [0.0] * DIM
        local_loss = 0.0
        for _ in range(16):
            x = [rng.uniform(-1, 1) for _ in range(DIM)]
            err = sum(a * b for a, b in zip(w, x)) - sum(a * b for a, b in zip(true_w, x))
            local_loss += err * err / 16
            for i in range(DIM):
                grad[i] += 2 * err * x[i] / 16
        summed = group.allreduce(grad + [local_loss])
        grad = [g / r.world for g in summed[:DIM]]
        loss = summed[DIM] / r.world
        # ZeRO-1: update my partition with my partition of the momentum.
        piece = [0.0] * DIM
        for k, i in enumerate(range(lo, hi)):
            state["momentum"][k] = 0.9 * state["momentum"][k] + grad[i]
            piece[i] = w[i] - args.lr * state["momentum"][k]
        state["w"] = group.allreduce(piece)  # gather the updated partitions
        state["step"] = step + 1
        if r.rank == 0:
            gang.log(f"step {step + 1}/{args.steps} loss {loss:.5f}")
        if state["step"] % 10 == 0:
            gang.save_checkpoint(r, state, f"rank{r.rank}.json")
        time.sleep(args.step_time)
    gang.save_checkpoint(r, state, f"rank{r.rank}.json")
    if r.rank == 0:
        gang.log(f"done: w = {[round(v, 2) for v in state['w']]} (want {true_w}), loss {loss:.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
