package api

import (
	"strconv"
	"strings"
	"time"
)

// The node-agent protocol (docs/api.md tells it step by step):
//
//	POST /v1/nodes/register          NodeRegistration -> Registration
//	POST /v1/nodes/{name}/heartbeat  Heartbeat -> HeartbeatResponse (410: register again)
//	GET  /v1/nodes/{name}/assignments  server-sent events, each an AssignmentSet
//	POST /v1/nodes/{name}/reports    RankReports
//	POST /v1/nodes/{name}/logs       LogChunk
//
// Assignments are level-triggered: every message is the whole desired state
// of the node, so an agent that reconnects, or a server that restarts, never
// leaves ranks running that should not, nor misses ranks that should.

// GPU is one accelerator of a node.
type GPU struct {
	Index     int    `json:"index"`
	UUID      string `json:"uuid"`
	Model     string `json:"model"`
	MemoryMiB int    `json:"memoryMiB"`
	// Emulated GPUs are stand-ins on machines without NVML (development,
	// CI); the scheduler treats them as real.
	Emulated bool `json:"emulated,omitempty"`
}

// HCA is an InfiniBand host channel adapter (one rail).
type HCA struct {
	Name     string  `json:"name"` // mlx5_0
	Port     int     `json:"port,omitempty"`
	RateGbps float64 `json:"rateGbps,omitempty"`
	GUID     string  `json:"guid,omitempty"`
	State    string  `json:"state,omitempty"` // ACTIVE, DOWN, ...
}

// NodeInventory is the hardware an agent found.
type NodeInventory struct {
	Hostname  string `json:"hostname,omitempty"`
	CPUs      int    `json:"cpus,omitempty"`
	MemoryMiB int    `json:"memoryMiB,omitempty"`
	GPUs      []GPU  `json:"gpus"`
	HCAs      []HCA  `json:"hcas,omitempty"`
}

// FabricPlace is where the agent believes its node sits. The server's
// fabric is authoritative; the place is used for nodes the fabric does not
// list and is reported when it disagrees.
type FabricPlace struct {
	Leaf  string `json:"leaf,omitempty"`
	Block string `json:"block,omitempty"`
}

// NodeRegistration is the first call of an agent, and the call it repeats
// whenever a heartbeat answers 410 Gone.
type NodeRegistration struct {
	Name string `json:"name"`
	// Address is how ranks on other nodes reach this one (MASTER_ADDR when
	// it hosts rank 0).
	Address      string        `json:"address"`
	Inventory    NodeInventory `json:"inventory"`
	Place        FabricPlace   `json:"place,omitzero"`
	AgentVersion string        `json:"agentVersion,omitempty"`
	// Labels become the node's metadata.labels (replacing those of an
	// earlier registration), e.g. gpucloud.io/simulated=true.
	Labels map[string]string `json:"labels,omitempty"`
}

// LabelSimulated marks a node whose GPUs are stand-ins and whose ranks run
// elsewhere (the simulated nodes of `gpucloud up --preset`).
const LabelSimulated = "gpucloud.io/simulated"

// Registration answers a registration.
type Registration struct {
	Node string `json:"node"`
	// LeaseTTLSeconds: the node is marked Down, and its gangs requeued, when
	// no heartbeat arrives for this long.
	LeaseTTLSeconds          int    `json:"leaseTTLSeconds"`
	HeartbeatIntervalSeconds int    `json:"heartbeatIntervalSeconds"`
	InFabric                 bool   `json:"inFabric"`
	Leaf                     string `json:"leaf"`
	// Warnings say where the registration disagrees with the fabric.
	Warnings []string `json:"warnings,omitempty"`
}

// Heartbeat keeps the node's lease alive and reports what it runs.
type Heartbeat struct {
	// Running lists the jobs (and their generation) with live ranks here.
	Running []RunningJob `json:"running,omitempty"`
	// Unhealthy lists GPU indices that failed health checks (XID errors,
	// fallen off the bus); empty means all healthy.
	Unhealthy []int `json:"unhealthy,omitempty"`
}

// RunningJob is one job with live ranks on a node.
type RunningJob struct {
	Job        string `json:"job"`
	Generation int    `json:"generation"`
	Ranks      []int  `json:"ranks,omitempty"`
}

// HeartbeatResponse answers a heartbeat.
type HeartbeatResponse struct {
	LeaseTTLSeconds int `json:"leaseTTLSeconds"`
}

// AssignmentSet is the whole desired state of a node: one message of the
// assignments stream.
type AssignmentSet struct {
	Node        string       `json:"node"`
	Assignments []Assignment `json:"assignments"`
	// ResourceVersion is the etcd revision the set reflects.
	ResourceVersion int64 `json:"resourceVersion"`
}

// Assignment is the part of one job generation that runs on one node.
type Assignment struct {
	Job        string `json:"job"`
	Name       string `json:"name,omitempty"`
	Tenant     string `json:"tenant"`
	Generation int    `json:"generation"`
	Launch     string `json:"launch"`
	// WorldSize is the number of ranks of the whole gang; NodeRank and
	// Nodes place this node among the gang's nodes.
	WorldSize int `json:"worldSize"`
	NodeRank  int `json:"nodeRank"`
	Nodes     int `json:"nodes"`
	// FirstRank..FirstRank+len(Processes)-1 are the ranks on this node.
	FirstRank  int               `json:"firstRank"`
	Processes  []Process         `json:"processes"`
	Command    []string          `json:"command"`
	Env        map[string]string `json:"env,omitempty"`
	WorkingDir string            `json:"workingDir,omitempty"`
	MasterAddr string            `json:"masterAddr"`
	MasterPort int               `json:"masterPort"`
	// Hosts are the gang's nodes in node-rank order (Hosts[NodeRank] is
	// this node): what the hostfiles of DeepSpeed and MPI list.
	Hosts []AssignmentHost `json:"hosts,omitempty"`
}

// AssignmentHost is one node of a gang.
type AssignmentHost struct {
	Node    string `json:"node"`
	Address string `json:"address"` // how the other nodes reach it
	Slots   int    `json:"slots"`   // the gang's GPUs on it
}

// Process is one rank to start.
type Process struct {
	Rank      int   `json:"rank"`
	LocalRank int   `json:"localRank"`
	GPUs      []int `json:"gpus"` // GPU indices on the node
}

// RankEnv is the environment of process p on top of the job's env: what
// torchrun, DeepSpeed and NCCL read.
func (a *Assignment) RankEnv(p Process) map[string]string {
	env := make(map[string]string, len(a.Env)+12)
	for k, v := range a.Env {
		env[k] = v
	}
	gpus := make([]string, len(p.GPUs))
	for i, g := range p.GPUs {
		gpus[i] = strconv.Itoa(g)
	}
	env["RANK"] = strconv.Itoa(p.Rank)
	env["LOCAL_RANK"] = strconv.Itoa(p.LocalRank)
	env["WORLD_SIZE"] = strconv.Itoa(a.WorldSize)
	env["LOCAL_WORLD_SIZE"] = strconv.Itoa(len(a.Processes))
	env["NODE_RANK"] = strconv.Itoa(a.NodeRank)
	env["NNODES"] = strconv.Itoa(a.Nodes)
	env["MASTER_ADDR"] = a.MasterAddr
	env["MASTER_PORT"] = strconv.Itoa(a.MasterPort)
	env["CUDA_VISIBLE_DEVICES"] = strings.Join(gpus, ",")
	env["GPUCLOUD_JOB"] = a.Job
	env["GPUCLOUD_GENERATION"] = strconv.Itoa(a.Generation)
	return env
}

// Rank event kinds.
const (
	RankStarted    = "started"
	RankExited     = "exited"
	RankCheckpoint = "checkpoint" // the job wrote a checkpoint (cheaper to preempt)
)

// RankReports carries what happened to ranks on a node.
type RankReports struct {
	Reports []RankEvent `json:"reports"`
}

// RankEvent is one thing that happened to one rank.
type RankEvent struct {
	Job        string    `json:"job"`
	Generation int       `json:"generation"`
	Rank       int       `json:"rank"`
	Event      string    `json:"event"` // started | exited | checkpoint
	ExitCode   int       `json:"exitCode,omitempty"`
	Reason     string    `json:"reason,omitempty"` // signal, OOM, launch error
	Time       time.Time `json:"time,omitzero"`
}

// LogChunk is a piece of a rank's output. Offsets let the server drop
// chunks it already has when an agent resends after a lost answer.
type LogChunk struct {
	Job        string `json:"job"`
	Generation int    `json:"generation"`
	Rank       int    `json:"rank"`
	Offset     int64  `json:"offset"`
	Data       []byte `json:"data"` // base64 in JSON
}

// NodeReport is what the server stores of one node's ranks of one job
// generation.
type NodeReport struct {
	Node       string          `json:"node"`
	Generation int             `json:"generation"`
	Ranks      map[int]RankRec `json:"ranks"`
}

// RankRec is the last known state of a rank.
type RankRec struct {
	Started bool `json:"started,omitempty"`
	// StartedAt is when the server recorded the start (its clock).
	StartedAt time.Time `json:"startedAt,omitzero"`
	Exited    bool      `json:"exited,omitempty"`
	ExitCode  int       `json:"exitCode,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	// Checkpoints counts checkpoint events of the rank.
	Checkpoints int `json:"checkpoints,omitempty"`
}
