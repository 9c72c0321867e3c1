// Package serving runs inference deployments: N replicas of a model server
// behind the router (package router), sized by the autoscaler (package
// autoscale) and replaced one by one on a spec change (package rollout).
//
// A Controller drives one deployment through a Driver, the thing that
// actually starts and stops replicas: the server implements it with jobs
// of one gang each placed by the scheduler, the tests and single-machine
// setups with local processes (package local). The controller is
// level-triggered: every Step reads the replicas from the driver, tells
// the router where they are, reads the load back, and acts on the
// difference, so a controller that restarts (a new leader) picks up where
// the last one stopped.
package serving

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"time"

	"gpucloud/internal/serving/autoscale"
	"gpucloud/internal/serving/router"
)

// Template is what every replica of a revision runs. Changing it makes a
// new revision and a rolling update; changing only counts, autoscaling or
// router options does not.
type Template struct {
	Command    []string          `json:"command"`
	Env        map[string]string `json:"env,omitempty"`
	WorkingDir string            `json:"workingDir,omitempty"`
	// What the server's driver schedules with; a local driver ignores it.
	Queue          string `json:"queue,omitempty"`
	GPUs           int    `json:"gpus,omitempty"`
	TensorParallel int    `json:"tensorParallel,omitempty"`
	GPUModel       string `json:"gpuModel,omitempty"`
	Priority       int32  `json:"priority,omitempty"`
	Preemptible    bool   `json:"preemptible,omitempty"`
}

// Revision names a template: the first 10 hex digits of the SHA-256 of its
// JSON form (map keys sorted by encoding/json, so equal templates agree).
func (t Template) Revision() string {
	b, _ := json.Marshal(t)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:5])
}

// Spec is one deployment as the controller runs it.
type Spec struct {
	Name string
	// Tenant owns the deployment and its replicas' jobs.
	Tenant   string
	Template Template
	// Min and Max bound the replicas. Without Autoscale the count is Min.
	Min, Max  int
	Autoscale *autoscale.Config // Min and Max are taken from the Spec
	Router    router.Options
	// MaxSurge, DrainTimeout and ReadyTimeout: see rollout.Spec.
	MaxSurge     int
	DrainTimeout time.Duration
	ReadyTimeout time.Duration
}

// Validate checks a spec.
func (s *Spec) Validate() error {
	var errs []error
	if s.Name == "" {
		errs = append(errs, errors.New("name: must not be empty"))
	}
	if len(s.Template.Command) == 0 || s.Template.Command[0] == "" {
		errs = append(errs, errors.New("command: must not be empty"))
	}
	if s.Min < 0 || s.Max < s.Min || s.Max < 1 {
		errs = append(errs, fmt.Errorf("replicas: want 0 <= min <= max and max >= 1, got min %d max %d", s.Min, s.Max))
	}
	if s.Autoscale != nil {
		c := *s.Autoscale
		c.Min, c.Max = s.Min, s.Max
		if _, err := autoscale.New(c); err != nil {
			errs = append(errs, fmt.Errorf("autoscale: %w", err))
		}
	}
	if err := s.Router.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Phase is a replica's life as the driver sees it.
type Phase string

const (
	Pending Phase = "Pending" // asked for: being placed or launched
	Running Phase = "Running" // its process runs; Addr says where it listens
	Exited  Phase = "Exited"  // its process is gone
)

// ReplicaSpec asks a driver for one replica.
type ReplicaSpec struct {
	Deployment string
	Tenant     string
	Revision   string
	Template   Template
}

// Replica is one replica as the driver knows it.
type Replica struct {
	ID         string
	Deployment string
	Revision   string
	Phase      Phase
	// Addr is host:port once Running.
	Addr string
	// Failed marks an Exited replica that was not stopped through Stop.
	Failed   bool
	ExitCode int
	Reason   string
}

// Driver starts and stops replicas. Its calls must not block on the
// replica: Start returns once the replica is asked for, Stop once it is
// told to stop; Replicas reports where they are.
type Driver interface {
	Start(ctx context.Context, r ReplicaSpec) (id string, err error)
	// Stop ends a replica gracefully (SIGTERM, then SIGKILL after a grace
	// period). The controller calls it only on drained replicas.
	Stop(ctx context.Context, id string) error
	// Forget drops what remains of an exited replica.
	Forget(ctx context.Context, id string) error
	Replicas(ctx context.Context, deployment string) ([]Replica, error)
}

// ExpandArgs replaces $VAR and ${VAR} in a command's arguments with values
// from env (the replica's environment: PORT and the template's Env);
// unknown variables are left as written, since the command may hand them
// to a shell. This is how `command: [..., "$PORT"]` gets its port without
// a shell.
func ExpandArgs(args []string, env map[string]string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = os.Expand(a, func(k string) string {
			if v, ok := env[k]; ok {
				return v
			}
			if k == "$" {
				return "$"
			}
			return "${" + k + "}"
		})
	}
	return out
}
