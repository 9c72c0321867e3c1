// Package examples holds the example jobs of gpucloud, embedded in the
// binary so that `gpucloud demo` runs them from anywhere: it writes them
// out when it does not find them in the working directory.
package examples

import "embed"

// FS holds every example: a directory per job with its job.yaml and
// scripts, and lib/ with what the Python examples share.
//
//go:embed README.md hello deepspeed mpi lib ddp/job.yaml ddp/train.py
var FS embed.FS

// Jobs lists the example directories in the order the demo runs them.
var Jobs = []string{"hello", "ddp", "deepspeed", "mpi"}
