#!/usr/bin/env python3
"""A one-GPU job: fits y = 3x + 2 by stochastic gradient descent.

Pure Python, so it runs anywhere the gpucloud agent does, emulated GPUs
included. It prints where it runs, the loss as it goes, and checkpoints into
GPUCLOUD_CHECKPOINT_DIR: a job that was requeued (its node drained, `gpucloud
up` stopped) or cancelled mid-way and resubmitted under the same ID resumes
from the last step it saved.
"""

import argparse
import os
import random
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import gang  # noqa: E402


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--step-time", type=float, default=0.2, help="seconds per step, so the job lasts a little")
    p.add_argument("--lr", type=float, default=0.2)
    args = p.parse_args()

    r = gang.Rank()
    gang.log(f"hello from {r}")
    state = gang.load_checkpoint(r) or {"step": 0, "w": 0.0, "b": 0.0}
    if state["step"]:
        gang.log(f"resumed from the checkpoint of step {state['step']}")
    gang.on_sigterm(lambda: gang.save_checkpoint(r, state))

    loss = float("nan")
    for step in range(state["step"], args.steps):
        rng = random.Random(1234 + step)  # the data of a step is the same after a resume
        xs = [rng.uniform(-1, 1) for _ in range(32)]
        ys = [3 * x + 2 + rng.gauss(0, 0.01) for x in xs]
        w, b = state["w"], state["b"]
        errs = [w * x + b - y for x, y in zip(xs, ys)]
        loss = sum(e * e for e in errs) / len(errs)
        state["w"] = w - args.lr * 2 * sum(e * x for e, x in zip(errs, xs)) / len(xs)
        state["b"] = b - args.lr * 2 * sum(errs) / len(xs)
        state["step"] = step + 1
        gang.log(f"step {step + 1}/{args.steps} loss {loss:.5f} w {state['w']:.3f} b {state['b']:.3f}")
        if state["step"] % 10 == 0:
            gang.save_checkpoint(r, state)
        time.sleep(args.step_time)
    gang.save_checkpoint(r, state)
    gang.log(f"done: y = {state['w']:.3f}x + {state['b']:.3f} (want 3x + 2), final loss {loss:.5f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
