#!/usr/bin/env python3
"""An MPI job: computes pi by the midpoint rule, each MPI rank integrating its
share of 4/(1+x^2) over [0, 1], then sums the shares (an all-reduce through
rank 0 over TCP, standing in for MPI_Allreduce, so that no mpi4py is needed).

It takes its rank from Open MPI (OMPI_COMM_WORLD_RANK) or MPICH (PMI_RANK)
and the rendezvous from the job's MASTER_ADDR and MASTER_PORT.
"""

import math
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import gang  # noqa: E402


def main():
    r = gang.Rank()
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2_000_000
    gang.log(f"MPI {r}")
    group = gang.Group(r)
    t0 = time.time()
    h = 1.0 / n
    part = sum(4.0 / (1.0 + ((i + 0.5) * h) ** 2) for i in range(r.rank, n, r.world)) * h
    total = group.allreduce([part])[0]
    if r.rank == 0:
        gang.log(f"pi = {total:.12f} (error {abs(total - math.pi):.2e}) from {n} intervals on {r.world} ranks in {time.time() - t0:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
