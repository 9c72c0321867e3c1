#!/usr/bin/env python3
"""A small PyTorch DDP training job for gpucloud.

It trains a two-layer network on generated regression data with the gloo
backend on CPU (or NCCL on GPUs with --backend nccl), prints its place in the
gang and the loss of every step, and checkpoints into GPUCLOUD_CHECKPOINT_DIR:
after a restart of the gang it resumes from the last checkpoint and the step
counter continues.

The agent sets what torchrun would: RANK, WORLD_SIZE, LOCAL_RANK,
MASTER_ADDR, MASTER_PORT (and GPUCLOUD_CHECKPOINT_DIR). Run by hand:

    MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 WORLD_SIZE=2 RANK=0 python3 train.py &
    MASTER_ADDR=127.0.0.1 MASTER_PORT=29500 WORLD_SIZE=2 RANK=1 python3 train.py
"""

import argparse
import datetime
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel as DDP

FEATURES = 16


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=50, help="total optimizer steps")
    p.add_argument("--batch", type=int, default=64, help="samples per rank and step")
    p.add_argument("--lr", type=float, default=0.02)
    p.add_argument("--ckpt-every", type=int, default=10, help="checkpoint every N steps")
    p.add_argument("--step-time", type=float, default=0.0, help="sleep per step (seconds), to make a short job last")
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--backend", default="gloo", help="gloo (CPU) or nccl (CUDA)")
    return p.parse_args()


def env_int(name, default):
    v = os.environ.get(name)
    return int(v) if v not in (None, "") else default


def log(msg):
    print(msg, flush=True)


def batch(step, rank, world, n, seed, device):
    """Deterministic data: each (step, rank) pair gets its own samples of
    y = x . w_true + noise, so a resumed run sees what it would have seen."""
    g = torch.Generator().manual_seed(seed)
    w_true = torch.randn(FEATURES, 1, generator=g)
    g.manual_seed(seed * 1_000_003 + step * world + rank + 1)
    x = torch.randn(n, FEATURES, generator=g)
    y = x @ w_true + 0.01 * torch.randn(n, 1, generator=g)
    return x.to(device), y.to(device)


def save_checkpoint(path, step, model, opt, loss):
    # Atomic: a rank killed mid-write leaves the previous checkpoint.
    tmp = f"{path}.tmp.{os.getpid()}"
    torch.save({"step": step, "model": model.state_dict(), "optim": opt.state_dict(), "loss": loss}, tmp)
    os.replace(tmp, path)


def main():
    args = parse_args()
    rank = env_int("RANK", 0)
    world = env_int("WORLD_SIZE", 1)
    local_rank = env_int("LOCAL_RANK", 0)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29500")
    restart = env_int("GPUCLOUD_RESTART_COUNT", env_int("TORCHELASTIC_RESTART_COUNT", 0))
    ckpt_dir = os.environ.get("GPUCLOUD_CHECKPOINT_DIR", "")

    if args.backend == "nccl":
        # The agent gives a per-GPU rank only its GPU (CUDA_VISIBLE_DEVICES),
        # which it sees as cuda:0; torchrun's ranks see the node's GPUs.
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    dist.init_process_group(args.backend, init_method="env://", rank=rank, world_size=world,
                            timeout=datetime.timedelta(minutes=5))
    log(f"rank={rank} world_size={world} local_rank={local_rank} node_rank={os.environ.get('NODE_RANK', '0')} "
        f"restart={restart} master={os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']} "
        f"cuda_visible_devices={os.environ.get('CUDA_VISIBLE_DEVICES', '')} device={device}")

    torch.manual_seed(args.seed)
    model = nn.Sequential(nn.Linear(FEATURES, 32), nn.ReLU(), nn.Linear(32, 1)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)

    # Rank 0 reads the checkpoint and sends it to everyone, so nodes whose
    # checkpoint directory is not shared still resume together.
    start = 0
    path = os.path.join(ckpt_dir, "ckpt.pt") if ckpt_dir else ""
    state = [None]
    if rank == 0 and path and os.path.exists(path):
        state[0] = torch.load(path, map_location="cpu")
    dist.broadcast_object_list(state, src=0)
    if state[0] is not None:
        model.load_state_dict(state[0]["model"])
        opt.load_state_dict(state[0]["optim"])
        start = state[0]["step"]
        log(f"resumed from step {start} (checkpoint loss {state[0]['loss']:.6f})")

    ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    loss_fn = nn.MSELoss()
    loss_val = float("nan")
    for step in range(start, args.steps):
        x, y = batch(step, rank, world, args.batch, args.seed, device)
        opt.zero_grad()
        loss = loss_fn(ddp(x), y)
        loss.backward()
        opt.step()
        # The gang's mean loss: every rank prints the same series.
        avg = loss.detach().clone()
        dist.all_reduce(avg)
        loss_val = avg.item() / world
        log(f"step {step + 1} loss {loss_val:.6f}")
        done = step + 1
        if path and local_rank == 0 and (done % args.ckpt_every == 0 or done == args.steps):
            os.makedirs(ckpt_dir, exist_ok=True)
            save_checkpoint(path, done, model, opt, loss_val)
            log(f"checkpoint step {done}")
        if args.step_time > 0:
            time.sleep(args.step_time)

    dist.barrier()
    dist.destroy_process_group()
    log(f"done rank={rank} steps={args.steps} final_loss={loss_val:.6f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
