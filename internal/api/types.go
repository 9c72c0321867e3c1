// Package api holds the resource types of gpucloud (tenants, queues, jobs,
// nodes, events, tokens) and the node-agent protocol, with their validation.
// The server, the CLI, the agent and the bench share these types, so the
// wire format has exactly one definition.
package api

import (
	"encoding/json"
	"fmt"
	"time"
)

// Version is the apiVersion of every gpucloud resource.
const Version = "gpucloud/v1"

// Kinds of resources.
const (
	KindJob    = "Job"
	KindNode   = "Node"
	KindQueue  = "Queue"
	KindTenant = "Tenant"
)

// ObjectMeta is what every stored object carries.
type ObjectMeta struct {
	Name string `json:"name,omitempty"`
	// ID identifies a job. The server assigns one unless the client picks
	// it; a client that picks its own ID can retry a submission safely: a
	// second create with the same ID answers 409 and never makes a
	// duplicate.
	ID     string            `json:"id,omitempty"`
	Tenant string            `json:"tenant,omitempty"`
	Labels map[string]string `json:"labels,omitempty"`
	// CreatedAt is set by the server.
	CreatedAt time.Time `json:"createdAt,omitzero"`
	// ResourceVersion is the etcd revision of the object's last change,
	// set by the server on reads.
	ResourceVersion int64 `json:"resourceVersion,omitempty"`
}

// Duration is a time.Duration written as "90s", "2h30m" in JSON and YAML.
type Duration time.Duration

func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("want a duration string such as \"2h\"")
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("want a duration such as \"2h\": %q", s)
	}
	*d = Duration(v)
	return nil
}

// Tenant is an organisation or team that owns jobs. Tokens belong to a
// tenant.
type Tenant struct {
	APIVersion string     `json:"apiVersion,omitempty"`
	Kind       string     `json:"kind,omitempty"`
	Metadata   ObjectMeta `json:"metadata"`
	Spec       TenantSpec `json:"spec,omitzero"`
}

// TenantSpec describes a tenant.
type TenantSpec struct {
	Description string `json:"description,omitempty"`
	// DefaultQueue is used by jobs that name no queue ("default" if empty).
	DefaultQueue string `json:"defaultQueue,omitempty"`
}

// Queue is a node of the queue tree with its quota in GPUs.
type Queue struct {
	APIVersion string     `json:"apiVersion,omitempty"`
	Kind       string     `json:"kind,omitempty"`
	Metadata   ObjectMeta `json:"metadata"`
	Spec       QueueSpec  `json:"spec"`
}

// QueueSpec is a queue's place in the tree and its share of the fleet.
type QueueSpec struct {
	Parent string `json:"parent,omitempty"`
	// Quota is the number of GPUs the queue is guaranteed (by reclaiming
	// what others borrowed). Jobs that are not preemptible run only within
	// it.
	Quota int `json:"quota"`
	// QuotaRemainder guarantees a top-level queue every GPU that the other
	// top-level queues' quotas leave over (the "default" queue made at
	// first start has it, so a fresh cloud runs jobs at once).
	QuotaRemainder bool `json:"quotaRemainder,omitempty"`
	// BorrowingLimit caps how many GPUs above Quota the queue may use on
	// idle capacity; nil means no limit.
	BorrowingLimit *int `json:"borrowingLimit,omitempty"`
	// Weight shares idle capacity among queues (default 1).
	Weight float64 `json:"weight,omitempty"`
	// Tenants may submit to the queue; empty means every tenant.
	Tenants []string `json:"tenants,omitempty"`
}

// Role is what a token may do.
type Role string

const (
	RoleAdmin  Role = "admin"  // everything
	RoleTenant Role = "tenant" // its own tenant's jobs; read queues and nodes
	RoleAgent  Role = "agent"  // the node-agent protocol only
)

// TokenRequest asks for a new token (admin only).
type TokenRequest struct {
	Name   string `json:"name,omitempty"`
	Role   Role   `json:"role"`
	Tenant string `json:"tenant,omitempty"` // required for RoleTenant
	// Node binds an agent token to one node: it may register, heartbeat,
	// report and ship logs for that node only, so a stolen node credential
	// cannot speak for the fleet. Empty: any node (a fleet-wide token).
	Node string `json:"node,omitempty"`
}

// TokenResponse carries a new token. The server stores only its hash: the
// token is shown once.
type TokenResponse struct {
	Token  string `json:"token"`
	ID     string `json:"id"` // a prefix of the hash, to name the token in listings and revocation
	Role   Role   `json:"role"`
	Tenant string `json:"tenant,omitempty"`
	Node   string `json:"node,omitempty"`
}

// TokenInfo is a stored token without its secret.
type TokenInfo struct {
	ID        string    `json:"id"`
	Name      string    `json:"name,omitempty"`
	Role      Role      `json:"role"`
	Tenant    string    `json:"tenant,omitempty"`
	Node      string    `json:"node,omitempty"` // agent tokens bound to one node
	CreatedAt time.Time `json:"createdAt"`
}

// Phase is the lifecycle phase of a job.
type Phase string

const (
	PhasePending   Phase = "Pending"
	PhaseRunning   Phase = "Running"
	PhaseSucceeded Phase = "Succeeded"
	PhaseFailed    Phase = "Failed"
	PhaseCancelled Phase = "Cancelled"
)

// Terminal reports whether a job in this phase will never run again.
func (p Phase) Terminal() bool {
	return p == PhaseSucceeded || p == PhaseFailed || p == PhaseCancelled
}

// Launch modes: how many processes a replica starts.
const (
	LaunchPerNode = "per-node" // one process per replica (torchrun, mpirun launch the rest)
	LaunchPerGPU  = "per-gpu"  // one process per GPU, RANK set per GPU
)

// Job is a gang of replicas that run a command.
type Job struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   ObjectMeta `json:"metadata"`
	Spec       JobSpec    `json:"spec"`
	Status     JobStatus  `json:"status,omitzero"`
}

// JobSpec is what the user asks for.
type JobSpec struct {
	Queue    string `json:"queue,omitempty"`
	Replicas int    `json:"replicas"`
	// MinReplicas > 0 makes the job elastic: it may run with fewer.
	MinReplicas    int    `json:"minReplicas,omitempty"`
	GPUsPerReplica int    `json:"gpusPerReplica"`
	GPUModel       string `json:"gpuModel,omitempty"`
	// TensorParallel keeps each group of that many GPUs inside one NVLink
	// domain.
	TensorParallel int               `json:"tensorParallel,omitempty"`
	Launch         string            `json:"launch,omitempty"`
	Command        []string          `json:"command"`
	Env            map[string]string `json:"env,omitempty"`
	WorkingDir     string            `json:"workingDir,omitempty"`
	RestartPolicy  RestartPolicy     `json:"restartPolicy,omitzero"`
	Topology       TopologySpec      `json:"topology,omitzero"`
	Priority       int32             `json:"priority,omitempty"`
	Preemptible    bool              `json:"preemptible,omitempty"`
	// EstimatedRuntime lets backfill start the job early.
	EstimatedRuntime   Duration `json:"estimatedRuntime,omitempty"`
	CheckpointInterval Duration `json:"checkpointInterval,omitempty"`
}

// RestartPolicy bounds restarts after a rank fails.
type RestartPolicy struct {
	MaxRestarts int `json:"maxRestarts"`
}

// TopologySpec constrains placement to one domain of a level.
type TopologySpec struct {
	Required  string `json:"required,omitempty"`  // leaf | block | pod | cluster
	Preferred string `json:"preferred,omitempty"` // same levels, best effort
}

// JobStatus is what the control plane knows of the job.
type JobStatus struct {
	Phase  Phase  `json:"phase"`
	Reason string `json:"reason,omitempty"`
	// Placement is where the current generation runs.
	Placement *Placement `json:"placement,omitempty"`
	// Generation counts starts: every (re)start of the gang gets a new one,
	// and agents kill ranks of older generations.
	Generation int `json:"generation,omitempty"`
	// Restarts counts restarts after failed ranks (bounded by
	// restartPolicy.maxRestarts); Requeues counts returns to the queue
	// after node failures or preemption.
	Restarts   int `json:"restarts"`
	Requeues   int `json:"requeues,omitempty"`
	MasterPort int `json:"masterPort,omitempty"`
	// ExitCode is the first non-zero exit code of a failed generation.
	ExitCode    int       `json:"exitCode,omitempty"`
	SubmittedAt time.Time `json:"submittedAt,omitzero"`
	StartedAt   time.Time `json:"startedAt,omitzero"`
	FinishedAt  time.Time `json:"finishedAt,omitzero"`
	// RestartAt delays a restart after failed ranks (exponential backoff):
	// agents get the new generation from then on, the old one's ranks are
	// stopped at once.
	RestartAt time.Time `json:"restartAt,omitzero"`
}

// Placement is where a job runs, stored compactly: runs of nodes with the
// same GPU indices are one group written as a hostlist ("ndv5-[0000-2047]"),
// so a gang over 16,384 whole nodes is a few dozen bytes. Ranks follow the
// group order, nodes in hostlist order, GPUs ascending.
type Placement struct {
	Groups   []PlacementGroup `json:"groups"`
	Nodes    int              `json:"nodes"`
	GPUs     int              `json:"gpus"`
	Replicas int              `json:"replicas"`
	// Leaves is the number of leaf switches spanned, MinLeaves the fewest
	// that could hold the gang; LeafNames lists them as a hostlist.
	Leaves    int    `json:"leaves"`
	MinLeaves int    `json:"minLeaves,omitempty"`
	LeafNames string `json:"leafNames,omitempty"`
}

// PlacementGroup is nodes sharing the same GPU indices.
type PlacementGroup struct {
	Hosts string `json:"hosts"` // hostlist expression
	GPUs  string `json:"gpus"`  // index list: "0-7", "0,2-3"
}

// NodePhase is the health of a node as the control plane sees it.
type NodePhase string

const (
	NodeReady NodePhase = "Ready" // registered, heartbeating
	NodeDown  NodePhase = "Down"  // lease expired or never registered
)

// Node is a GPU server.
type Node struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   ObjectMeta `json:"metadata"`
	Spec       NodeSpec   `json:"spec,omitzero"`
	Status     NodeStatus `json:"status"`
}

// NodeSpec is what an administrator sets on a node.
type NodeSpec struct {
	// Cordoned nodes take no new work; running work stays.
	Cordoned bool `json:"cordoned,omitempty"`
	// Draining nodes take no new work and their gangs are requeued.
	Draining bool `json:"draining,omitempty"`
}

// NodeStatus is what the agent and the control plane report.
type NodeStatus struct {
	Phase     NodePhase     `json:"phase"`
	Address   string        `json:"address,omitempty"`
	Inventory NodeInventory `json:"inventory,omitzero"`
	// Leaf is the leaf switch domain of the node; InFabric is false for a
	// node the fabric file did not list (it hangs from leaf "local").
	Leaf          string    `json:"leaf,omitempty"`
	InFabric      bool      `json:"inFabric"`
	GPUs          int       `json:"gpus"`
	GPUsAllocated int       `json:"gpusAllocated"`
	AgentVersion  string    `json:"agentVersion,omitempty"`
	RegisteredAt  time.Time `json:"registeredAt,omitzero"`
	Reason        string    `json:"reason,omitempty"`
	// Unhealthy lists GPU indices the agent reports as failed.
	Unhealthy []int `json:"unhealthy,omitempty"`
}

// Event is something that happened, for `gpucloud events` and the
// dashboard. Events expire after an hour.
type Event struct {
	Time    time.Time `json:"time"`
	Type    string    `json:"type"` // Normal | Warning
	Reason  string    `json:"reason"`
	Kind    string    `json:"kind"` // Job | Node | Queue
	Name    string    `json:"name"` // job ID, node or queue name
	Tenant  string    `json:"tenant,omitempty"`
	Message string    `json:"message,omitempty"`
}

// List is a page of objects.
type List[T any] struct {
	Items []T `json:"items"`
	// ResourceVersion is the etcd revision the list was read at; a watch
	// from it misses nothing.
	ResourceVersion int64 `json:"resourceVersion"`
}

// WatchEvent is one message of a watch stream (server-sent events).
type WatchEvent[T any] struct {
	Type   string `json:"type"` // ADDED | MODIFIED | DELETED
	Object T      `json:"object"`
}

// ErrorResponse is the body of every 4xx and 5xx answer.
type ErrorResponse struct {
	Error  string       `json:"error"`
	Fields []FieldError `json:"fields,omitempty"`
}

// Status is a short answer to actions (cancel, cordon).
type Status struct {
	Message string `json:"message"`
}
