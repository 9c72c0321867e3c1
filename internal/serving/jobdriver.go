package serving

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"hash/fnv"
	"net"
	"strconv"

	"gpucloud/internal/api"
)

// Labels the JobDriver puts on replica jobs.
const (
	LabelDeployment = "gpucloud.io/deployment"
	LabelRevision   = "gpucloud.io/revision"
)

// JobStore is what the server gives a JobDriver: its jobs (through the
// same paths as the API, so validation, quotas and events apply) and its
// nodes' addresses.
type JobStore interface {
	// CreateJob submits a job as POST /v1/jobs does.
	CreateJob(ctx context.Context, j *api.Job) error
	// CancelJob cancels a job (the agents SIGTERM its ranks, then SIGKILL
	// after their grace period).
	CancelJob(ctx context.Context, id, reason string) error
	// DeleteJob deletes a finished job.
	DeleteJob(ctx context.Context, id string) error
	// ListJobs returns the jobs carrying every given label. Deployment
	// names are global (they are the router's paths), so the deployment
	// label alone finds a deployment's replicas.
	ListJobs(ctx context.Context, labels map[string]string) ([]api.Job, error)
	// NodeAddress is the address a node registered ("" when unknown).
	NodeAddress(node string) string
}

var _ Driver = (*JobDriver)(nil)

// JobDriver runs each replica as a job of one gang through the scheduler:
// one replica of Template.GPUs GPUs, its tensor-parallel group inside one
// NVLink domain, at the deployment's priority, never restarted in place
// (a crash is the controller's to replace, with backoff). The replica's
// port is chosen from its job ID and handed to it in PORT and in "$PORT"
// of its command, so the agent needs nothing new.
type JobDriver struct {
	Store JobStore
}

// ReplicaPort is the port of a replica job: spread over 20000-49999 like
// rendezvous ports, fixed for the job's life so its address is known
// before it starts.
func ReplicaPort(jobID string) int {
	h := fnv.New32a()
	h.Write([]byte(jobID + "/http"))
	return 20000 + int(h.Sum32()%30000)
}

// ReplicaJob is the job of one replica.
func ReplicaJob(id string, r ReplicaSpec) *api.Job {
	t := r.Template
	env := make(map[string]string, len(t.Env)+3)
	for k, v := range t.Env {
		env[k] = v
	}
	env["PORT"] = strconv.Itoa(ReplicaPort(id))
	env["GPUCLOUD_DEPLOYMENT"] = r.Deployment
	env["GPUCLOUD_REVISION"] = r.Revision
	gpus := max(t.GPUs, 1)
	tp := t.TensorParallel
	if tp == 0 {
		tp = gpus // the whole replica is one tensor-parallel group
	}
	return &api.Job{
		APIVersion: api.Version, Kind: api.KindJob,
		Metadata: api.ObjectMeta{
			Name: id, ID: id, Tenant: r.Tenant,
			Labels: map[string]string{LabelDeployment: r.Deployment, LabelRevision: r.Revision},
		},
		Spec: api.JobSpec{
			Queue: t.Queue, Replicas: 1, GPUsPerReplica: gpus, GPUModel: t.GPUModel, TensorParallel: tp,
			Launch: api.LaunchPerNode, Command: ExpandArgs(t.Command, env), Env: env, WorkingDir: t.WorkingDir,
			Priority: t.Priority, Preemptible: t.Preemptible,
		},
	}
}

// replicaJobID names a replica job: the deployment (cut to fit a DNS
// label), the revision, and a random suffix.
func replicaJobID(deployment, revision string) (string, error) {
	var b [3]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	if len(deployment) > 40 {
		deployment = deployment[:40]
	}
	return fmt.Sprintf("%s-%.6s-%s", deployment, revision, hex.EncodeToString(b[:])), nil
}

// Start submits the replica's job.
func (d *JobDriver) Start(ctx context.Context, r ReplicaSpec) (string, error) {
	id, err := replicaJobID(r.Deployment, r.Revision)
	if err != nil {
		return "", err
	}
	if err := d.Store.CreateJob(ctx, ReplicaJob(id, r)); err != nil {
		return "", fmt.Errorf("submitting replica job %s: %w", id, err)
	}
	return id, nil
}

// Stop cancels the replica's job.
func (d *JobDriver) Stop(ctx context.Context, id string) error {
	return d.Store.CancelJob(ctx, id, "stopped by its deployment (drained)")
}

// Forget deletes the replica's finished job.
func (d *JobDriver) Forget(ctx context.Context, id string) error {
	return d.Store.DeleteJob(ctx, id)
}

// Replicas lists the deployment's replicas from their jobs.
func (d *JobDriver) Replicas(ctx context.Context, deployment string) ([]Replica, error) {
	jobs, err := d.Store.ListJobs(ctx, map[string]string{LabelDeployment: deployment})
	if err != nil {
		return nil, err
	}
	out := make([]Replica, 0, len(jobs))
	for i := range jobs {
		out = append(out, d.replica(&jobs[i]))
	}
	return out, nil
}

func (d *JobDriver) replica(j *api.Job) Replica {
	r := Replica{ID: j.Metadata.ID, Deployment: j.Metadata.Labels[LabelDeployment], Revision: j.Metadata.Labels[LabelRevision], Reason: j.Status.Reason}
	switch st := &j.Status; {
	case st.Phase.Terminal():
		// Cancelled is the controller's Stop; any other end (a crash, an
		// exit, running out of restarts) is a failure to replace.
		r.Phase, r.Failed, r.ExitCode = Exited, st.Phase != api.PhaseCancelled, st.ExitCode
	case st.Phase == api.PhaseRunning && st.Placement != nil:
		r.Phase = Running
		if nodes, err := st.Placement.Expand(); err == nil && len(nodes) > 0 {
			if host := d.Store.NodeAddress(nodes[0].Node); host != "" {
				r.Addr = net.JoinHostPort(host, j.Spec.Env["PORT"])
			}
		}
	default:
		r.Phase = Pending
	}
	return r
}
