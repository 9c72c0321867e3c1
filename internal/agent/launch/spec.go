// Package launch starts the ranks of a job generation on a node as real OS
// processes and tears them down as a gang.
//
// Each rank runs under a small supervisor (the shim: `gpucloud agent shim`),
// as containerd-shim and conmon do for containers. The shim leads the
// rank's process group, writes the rank's output to a rotated log file and
// its exit status to a file, so ranks outlive an agent restart and the
// restarted agent still learns how they ended. The launcher keeps a state
// file (pid and kernel start time of every shim) so a restarted agent
// adopts what it launched, reports what was lost, and never starts a job
// generation twice.
package launch

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"gpucloud/internal/api"
)

// Spec is one job generation's part on this node: the control plane's
// assignment and what the agent adds to it.
type Spec struct {
	api.Assignment
	// Hosts are the gang's nodes in node-rank order, for the hostfiles
	// (made by the agent from the assignment's own Hosts, which this
	// field shadows). Empty when unknown: GPUCLOUD_HOSTFILE is then not
	// set.
	Hosts []Host `json:"hosts,omitempty"`
}

// Host is one line of a hostfile.
type Host struct {
	Name  string `json:"name"` // a name or address the ranks can reach
	Slots int    `json:"slots"`
}

// Key names a job generation.
type Key struct {
	Job        string `json:"job"`
	Generation int    `json:"generation"`
}

func (k Key) String() string { return fmt.Sprintf("%s/%d", k.Job, k.Generation) }

// Key returns the spec's job generation.
func (s *Spec) Key() Key { return Key{s.Job, s.Generation} }

// validate rejects what the launcher cannot start.
func (s *Spec) validate() error {
	if err := safeName("job", s.Job); err != nil {
		return err
	}
	if s.Generation < 0 {
		return fmt.Errorf("job %s: negative generation %d", s.Job, s.Generation)
	}
	if len(s.Command) == 0 {
		return fmt.Errorf("job %s: empty command", s.Job)
	}
	if len(s.Processes) == 0 {
		return fmt.Errorf("job %s: no process to start on this node", s.Job)
	}
	seen := map[int]bool{}
	for _, p := range s.Processes {
		if p.Rank < 0 || p.Rank >= s.WorldSize {
			return fmt.Errorf("job %s: rank %d outside the world of %d", s.Job, p.Rank, s.WorldSize)
		}
		if seen[p.Rank] {
			return fmt.Errorf("job %s: rank %d twice", s.Job, p.Rank)
		}
		seen[p.Rank] = true
	}
	return nil
}

// safeName keeps a name usable as one path element.
func safeName(what, s string) error {
	if s == "" || s == "." || s == ".." || strings.ContainsAny(s, "/\\\x00") {
		return fmt.Errorf("%s %q cannot name a directory", what, s)
	}
	return nil
}

// Environment variables the launcher sets besides torchrun's.
const (
	EnvJobID          = "GPUCLOUD_JOB_ID"
	EnvCheckpointDir  = "GPUCLOUD_CHECKPOINT_DIR"
	EnvHostfile       = "GPUCLOUD_HOSTFILE"       // "host slots=N": DeepSpeed and Open MPI
	EnvHostfileMPICH  = "GPUCLOUD_HOSTFILE_MPICH" // "host:N": MPICH, Intel MPI
	EnvRestartCount   = "GPUCLOUD_RESTART_COUNT"
	EnvNodeName       = "GPUCLOUD_NODE_NAME"
	envTorchRestarts  = "TORCHELASTIC_RESTART_COUNT"
	envTorchRunID     = "TORCHELASTIC_RUN_ID"
	envGroupRank      = "GROUP_RANK"
	envRoleRank       = "ROLE_RANK"
	envRoleWorldSize  = "ROLE_WORLD_SIZE"
	envGroupWorldSize = "GROUP_WORLD_SIZE"
)

// rankEnv is the whole environment of one rank, in the order of
// precedence: the agent's own environment (without its GPUCLOUD_
// settings), the node's NCCL settings, the job's env, then what identifies
// the rank, which the job cannot override.
func rankEnv(base []string, node map[string]string, s *Spec, p api.Process, paths rankPaths, nodeName string) []string {
	env := map[string]string{}
	for _, kv := range base {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || strings.HasPrefix(k, "GPUCLOUD_") {
			continue
		}
		env[k] = v
	}
	for k, v := range node {
		env[k] = v
	}
	// The assignment's env: the job's variables, then RANK, WORLD_SIZE,
	// MASTER_ADDR ... as the control plane defines them.
	for k, v := range s.RankEnv(p) {
		env[k] = v
	}
	env[EnvJobID] = s.Job
	env[EnvCheckpointDir] = paths.checkpoint
	// Generations count the gang's starts from 1; the restart count is 0
	// on the first run.
	restarts := strconv.Itoa(max(s.Generation-1, 0))
	env[EnvRestartCount] = restarts
	env[EnvNodeName] = nodeName
	env[envTorchRestarts] = restarts
	env[envTorchRunID] = s.Job
	env[envGroupRank] = strconv.Itoa(s.NodeRank)
	env[envGroupWorldSize] = strconv.Itoa(s.Nodes)
	env[envRoleRank] = strconv.Itoa(p.Rank)
	env[envRoleWorldSize] = strconv.Itoa(s.WorldSize)
	if paths.hostfile != "" {
		env[EnvHostfile] = paths.hostfile
		env[EnvHostfileMPICH] = paths.hostfileMPICH
	}
	out := make([]string, 0, len(env))
	for k, v := range env {
		out = append(out, k+"="+v)
	}
	slices.Sort(out)
	return out
}

// writeHostfiles writes the gang's hostfiles into dir: "hostfile" in the
// "host slots=N" form DeepSpeed and Open MPI read, "hostfile.mpich" in the
// "host:N" form of MPICH and Intel MPI.
func writeHostfiles(dir string, hosts []Host) (slotsFile, mpichFile string, err error) {
	if len(hosts) == 0 {
		return "", "", nil
	}
	var a, b strings.Builder
	for _, h := range hosts {
		if h.Name == "" || strings.ContainsAny(h.Name, " \t\n:") || h.Slots <= 0 {
			return "", "", fmt.Errorf("hostfile: bad host %q with %d slots", h.Name, h.Slots)
		}
		fmt.Fprintf(&a, "%s slots=%d\n", h.Name, h.Slots)
		fmt.Fprintf(&b, "%s:%d\n", h.Name, h.Slots)
	}
	slotsFile = filepath.Join(dir, "hostfile")
	mpichFile = filepath.Join(dir, "hostfile.mpich")
	if err := writeFileAtomic(slotsFile, []byte(a.String()), false); err != nil {
		return "", "", err
	}
	if err := writeFileAtomic(mpichFile, []byte(b.String()), false); err != nil {
		return "", "", err
	}
	return slotsFile, mpichFile, nil
}

// writeFileAtomic writes through a temporary file and a rename, so a crash
// of the writer leaves the old file or the new one. durable adds an fsync,
// which only a power loss needs: such files outlive a crash of the agent
// in the page cache, and after a power loss no rank survives to be found.
func writeFileAtomic(path string, data []byte, durable bool) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(data)
	if err == nil && durable {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return nil
}
