#!/usr/bin/env python3
"""A DeepSpeed-style launcher: one per replica, it reads the gang's hostfile
and starts one worker per GPU, as `deepspeed --hostfile` (through
deepspeed.launcher.launch) does on every node.

The hostfile (GPUCLOUD_HOSTFILE, "host slots=N" lines in node order, the
format DeepSpeed and Open MPI read) tells the world: every host and how many
GPUs it gives the job. From it the launcher prints DeepSpeed's world_info,
checks that it matches the gang, and gives each worker RANK, LOCAL_RANK,
WORLD_SIZE, MASTER_ADDR and MASTER_PORT. SIGTERM is passed on to the workers.
"""

import base64
import json
import os
import signal
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import gang  # noqa: E402


def read_hostfile(path):
    """Parse "host slots=N" lines (comments and blank lines allowed) as DeepSpeed does."""
    hosts = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) != 2 or not parts[1].startswith("slots="):
                raise SystemExit(f"{path}:{n}: want 'host slots=N', got {line!r}")
            host, slots = parts[0], int(parts[1][len("slots="):])
            hosts[host] = hosts.get(host, 0) + slots
    return hosts


def main():
    replica = gang.env_int("RANK")            # per-node launch: one launcher per replica
    replicas = gang.env_int("WORLD_SIZE", default=1)
    gpus = [g for g in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if g != ""]
    if not gpus:
        raise SystemExit("CUDA_VISIBLE_DEVICES is empty: this launcher starts one worker per GPU")
    world = replicas * len(gpus)

    path = os.environ.get("GPUCLOUD_HOSTFILE", "")
    if path:
        hosts = read_hostfile(path)
        slots = sum(hosts.values())
        gang.log(f"hostfile {path}: {len(hosts)} host(s), {slots} slot(s)")
        if slots != world:
            raise SystemExit(f"hostfile has {slots} slots but the gang has {replicas} replicas x {len(gpus)} GPUs = {world}")
    else:
        # Without a hostfile (an agent that does not write one), the world
        # is still known: every replica has the same number of GPUs.
        hosts = {os.environ.get("MASTER_ADDR", "127.0.0.1"): world}
        gang.log("GPUCLOUD_HOSTFILE is not set: taking the world from WORLD_SIZE and CUDA_VISIBLE_DEVICES")
    world_info = {h: list(range(n)) for h, n in hosts.items()}
    gang.log(f"replica {replica}/{replicas}: world_info {base64.urlsafe_b64encode(json.dumps(world_info).encode()).decode()} "
             f"= {json.dumps(world_info)}")

    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train.py")
    workers = []
    for local, gpu in enumerate(gpus):
        env = dict(os.environ)
        env.update(RANK=str(replica * len(gpus) + local), LOCAL_RANK=str(local), WORLD_SIZE=str(world),
                   LOCAL_WORLD_SIZE=str(len(gpus)), CUDA_VISIBLE_DEVICES=gpu)
        workers.append(subprocess.Popen([sys.executable, script] + sys.argv[1:], env=env))

    def forward(signum, frame):
        for w in workers:
            if w.poll() is None:
                w.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = 0
    for w in workers:
        rc = w.wait()
        if rc != 0 and code == 0:
            code = rc if rc > 0 else 128 - rc
    return code


if __name__ == "__main__":
    sys.exit(main())
