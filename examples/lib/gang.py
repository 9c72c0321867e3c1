"""What the example jobs share, in the Python standard library only.

- Rank: where this process sits in the gang, from the environment the
  gpucloud agent sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
  MASTER_PORT), or from Open MPI's / MPICH's variables under mpirun.
- Group: an all-reduce over TCP through rank 0 (a star), enough for the
  examples to exchange gradients without PyTorch or an MPI library.
- Checkpoints as JSON in GPUCLOUD_CHECKPOINT_DIR, written atomically, so a
  requeued or restarted job resumes where it stopped.
- on_sigterm: gpucloud stops ranks with SIGTERM (then SIGKILL after the
  grace period); the examples checkpoint and exit 143.
"""

import json
import os
import signal
import socket
import sys
import time


def env_int(*names, default=0):
    for n in names:
        v = os.environ.get(n)
        if v not in (None, ""):
            return int(v)
    return default


class Rank:
    def __init__(self):
        # Under mpirun the MPI variables win: the launcher's own RANK and
        # WORLD_SIZE (from the agent) are inherited by every MPI rank.
        self.rank = env_int("OMPI_COMM_WORLD_RANK", "PMI_RANK", "RANK")
        self.world = env_int("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "WORLD_SIZE", default=1)
        self.local_rank = env_int("OMPI_COMM_WORLD_LOCAL_RANK", "MPI_LOCALRANKID", "LOCAL_RANK")
        self.master_addr = os.environ.get("MASTER_ADDR", "127.0.0.1")
        self.master_port = env_int("MASTER_PORT", default=29500)
        self.node = os.environ.get("GPUCLOUD_NODE_NAME", socket.gethostname())
        self.gpus = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        self.generation = env_int("GPUCLOUD_GENERATION")
        self.ckpt_dir = os.environ.get("GPUCLOUD_CHECKPOINT_DIR", "")

    def __str__(self):
        return (f"rank {self.rank}/{self.world} local_rank {self.local_rank} on {self.node} "
                f"gpus [{self.gpus}] master {self.master_addr}:{self.master_port} generation {self.generation}")


def log(msg):
    print(msg, flush=True)


def _send(sock, obj):
    sock.sendall((json.dumps(obj) + "\n").encode())


class _Lines:
    def __init__(self, sock):
        self.f = sock.makefile("r")

    def recv(self):
        line = self.f.readline()
        if not line:
            raise ConnectionError("peer closed the connection")
        return json.loads(line)


class Group:
    """All-reduce (sum) of lists of floats among WORLD ranks through rank 0."""

    def __init__(self, r, timeout=120.0):
        self.r = r
        if r.world == 1:
            return
        if r.rank == 0:
            srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            srv.bind(("", r.master_port))
            srv.listen(r.world)
            srv.settimeout(timeout)
            self.peers = {}
            while len(self.peers) < r.world - 1:
                conn, _ = srv.accept()
                lines = _Lines(conn)
                hello = lines.recv()
                self.peers[hello["rank"]] = (conn, lines)
            srv.close()
        else:
            deadline = time.time() + timeout
            while True:
                try:
                    self.sock = socket.create_connection((r.master_addr, r.master_port), timeout=5)
                    break
                except OSError:
                    if time.time() > deadline:
                        raise
                    time.sleep(0.2)
            self.sock.settimeout(timeout)
            self.lines = _Lines(self.sock)
            _send(self.sock, {"rank": r.rank})

    def allreduce(self, values):
        if self.r.world == 1:
            return list(values)
        if self.r.rank == 0:
            total = list(values)
            for rank in sorted(self.peers):
                _, lines = self.peers[rank]
                for i, v in enumerate(lines.recv()):
                    total[i] += v
            for conn, _ in self.peers.values():
                _send(conn, total)
            return total
        _send(self.sock, list(values))
        return self.lines.recv()


def load_checkpoint(r, name="ckpt.json"):
    if not r.ckpt_dir:
        return None
    path = os.path.join(r.ckpt_dir, name)
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def save_checkpoint(r, state, name="ckpt.json"):
    if not r.ckpt_dir:
        return
    os.makedirs(r.ckpt_dir, exist_ok=True)
    path = os.path.join(r.ckpt_dir, name)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(state, f)
    os.replace(tmp, path)


def on_sigterm(fn):
    """Run fn (a checkpoint) on SIGTERM, then exit 143 as a killed process would."""

    def handler(signum, frame):
        log("SIGTERM: saving a checkpoint and stopping")
        fn()
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
