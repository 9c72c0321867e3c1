package api

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"
)

// KindDeployment is an inference deployment: replicas of a model server
// behind the server's router.
const KindDeployment = "Deployment"

// MaxDeploymentReplicas bounds spec.replicas.max.
const MaxDeploymentReplicas = 1024

// PriorityClasses name priorities. Training jobs default to 0, so a
// "high" deployment outranks them inside a shared queue.
var PriorityClasses = map[string]int32{"low": -1000, "normal": 0, "high": 1000}

// PriorityValue is a priority written as a class name or a number.
type PriorityValue int32

func (p PriorityValue) MarshalJSON() ([]byte, error) {
	for name, v := range PriorityClasses {
		if v == int32(p) {
			return json.Marshal(name)
		}
	}
	return json.Marshal(int32(p))
}

func (p *PriorityValue) UnmarshalJSON(b []byte) error {
	var n int32
	if err := json.Unmarshal(b, &n); err == nil {
		*p = PriorityValue(n)
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		if v, ok := PriorityClasses[s]; ok {
			*p = PriorityValue(v)
			return nil
		}
	}
	names := make([]string, 0, len(PriorityClasses))
	for k := range PriorityClasses {
		names = append(names, k)
	}
	sort.Strings(names)
	return fmt.Errorf("want one of %s, or a number", strings.Join(names, ", "))
}

// Deployment runs replicas of a model server and routes
// /v1/deployments/NAME/... to them.
type Deployment struct {
	APIVersion string           `json:"apiVersion"`
	Kind       string           `json:"kind"`
	Metadata   ObjectMeta       `json:"metadata"`
	Spec       DeploymentSpec   `json:"spec"`
	Status     DeploymentStatus `json:"status,omitzero"`
}

// DeploymentSpec is what the user asks for. Changing queue, gpusPerReplica,
// gpuModel, tensorParallel, command, env, workingDir, priority or
// preemptible rolls the replicas; the rest applies in place.
type DeploymentSpec struct {
	Queue          string            `json:"queue,omitempty"`
	GPUsPerReplica int               `json:"gpusPerReplica"`
	GPUModel       string            `json:"gpuModel,omitempty"`
	TensorParallel int               `json:"tensorParallel,omitempty"`
	Command        []string          `json:"command"`
	Env            map[string]string `json:"env,omitempty"`
	WorkingDir     string            `json:"workingDir,omitempty"`
	Replicas       ReplicaBounds     `json:"replicas"`
	Readiness      ReadinessSpec     `json:"readiness,omitzero"`
	// Autoscale, when set, moves the count between min and max; without
	// it the deployment runs min replicas.
	Autoscale   *AutoscaleSpec `json:"autoscale,omitempty"`
	Priority    PriorityValue  `json:"priority,omitempty"`
	Preemptible bool           `json:"preemptible,omitempty"`
	Router      RouterSpec     `json:"router,omitzero"`
	Rollout     RolloutSpec    `json:"rollout,omitzero"`
}

// ReplicaBounds bound the replica count.
type ReplicaBounds struct {
	Min int `json:"min"`
	Max int `json:"max,omitempty"` // default: min
}

// ReadinessSpec is how the router checks a replica.
type ReadinessSpec struct {
	Path    string   `json:"path,omitempty"`    // empty: the port accepts connections
	Period  Duration `json:"period,omitempty"`  // default 1s
	Timeout Duration `json:"timeout,omitempty"` // default 1s
}

// AutoscaleSpec sizes the deployment by load.
type AutoscaleSpec struct {
	TargetInflight  float64  `json:"targetInflight"`
	TargetQueueTime Duration `json:"targetQueueTime,omitempty"`
	ScaleDownDelay  Duration `json:"scaleDownDelay,omitempty"` // default 5m
}

// RouterSpec tunes the router for this deployment.
type RouterSpec struct {
	Retry                 string   `json:"retry,omitempty"` // all (default) | safe | none
	MaxInflightPerReplica int      `json:"maxInflightPerReplica,omitempty"`
	QueueTimeout          Duration `json:"queueTimeout,omitempty"`
	ForwardAuthorization  bool     `json:"forwardAuthorization,omitempty"`
}

// RolloutSpec tunes rolling updates and draining.
type RolloutSpec struct {
	MaxSurge     int      `json:"maxSurge,omitempty"`     // default 1
	DrainTimeout Duration `json:"drainTimeout,omitempty"` // default 2m
	ReadyTimeout Duration `json:"readyTimeout,omitempty"` // default: none
}

// DeploymentStatus is what the leader's controller reports.
type DeploymentStatus struct {
	Revision     string    `json:"revision,omitempty"`
	Desired      int       `json:"desired"`
	Ready        int       `json:"ready"`
	Updated      int       `json:"updated"`
	UpdatedReady int       `json:"updatedReady"`
	InFlight     int       `json:"inFlight"`
	Queued       int       `json:"queued"`
	ScaleReason  string    `json:"scaleReason,omitempty"`
	Message      string    `json:"message,omitempty"`
	ObservedAt   time.Time `json:"observedAt,omitzero"`
}

// Environment variables gpucloud sets for every replica.
var deploymentEnv = map[string]bool{"PORT": true, "GPUCLOUD_DEPLOYMENT": true, "GPUCLOUD_REVISION": true}

// DefaultDeployment fills in what a user may leave out.
func DefaultDeployment(d *Deployment) {
	if d.APIVersion == "" {
		d.APIVersion = Version
	}
	if d.Kind == "" {
		d.Kind = KindDeployment
	}
	if d.Spec.Replicas.Max == 0 {
		d.Spec.Replicas.Max = max(d.Spec.Replicas.Min, 1)
	}
	if len(d.Spec.Env) == 0 {
		d.Spec.Env = nil
	}
	if len(d.Metadata.Labels) == 0 {
		d.Metadata.Labels = nil
	}
}

// ValidateDeployment checks a deployment (after DefaultDeployment).
func ValidateDeployment(d *Deployment) error {
	var e errs
	checkKind(&e, d.APIVersion, d.Kind, KindDeployment)
	checkMeta(&e, &d.Metadata)
	if d.Metadata.ID != "" {
		e.add("metadata.id", "deployments are named by metadata.name only")
	}
	s := &d.Spec
	if s.Queue != "" {
		checkName(&e, "spec.queue", s.Queue)
	}
	checkGPUsPerReplica(&e, s.GPUsPerReplica)
	if tp := s.TensorParallel; tp < 0 || (tp > 0 && s.GPUsPerReplica > 0 && s.GPUsPerReplica%tp != 0) {
		e.add("spec.tensorParallel", "must divide spec.gpusPerReplica (%d)", s.GPUsPerReplica)
	}
	if len(s.GPUModel) > 63 {
		e.add("spec.gpuModel", "must be at most 63 characters")
	}
	checkProcess(&e, s.Command, s.Env, s.WorkingDir, func(k string) bool { return reservedEnv[k] || deploymentEnv[k] }, "replica")
	r := s.Replicas
	switch {
	case r.Min < 0:
		e.add("spec.replicas.min", "must not be negative")
	case r.Min < 1 && s.Autoscale == nil:
		// Only the autoscaler brings a deployment back from zero.
		e.add("spec.replicas.min", "must be at least 1 (0 needs spec.autoscale)")
	case r.Min > MaxDeploymentReplicas:
		e.add("spec.replicas.min", "must be at most %d", MaxDeploymentReplicas)
	}
	if r.Max < max(r.Min, 1) || r.Max > MaxDeploymentReplicas {
		e.add("spec.replicas.max", "must be between max(1, spec.replicas.min) and %d", MaxDeploymentReplicas)
	}
	if p := s.Readiness.Path; p != "" && (p[0] != '/' || len(p) > 1024 || strings.ContainsAny(p, " \t\r\n#")) {
		e.add("spec.readiness.path", "must be a path starting with / (at most 1024 bytes, no spaces)")
	}
	if s.Readiness.Period < 0 {
		e.add("spec.readiness.period", "must not be negative")
	}
	if s.Readiness.Timeout < 0 {
		e.add("spec.readiness.timeout", "must not be negative")
	}
	if a := s.Autoscale; a != nil {
		if !(a.TargetInflight > 0) || math.IsInf(a.TargetInflight, 0) {
			e.add("spec.autoscale.targetInflight", "must be a positive number")
		}
		if a.TargetQueueTime < 0 {
			e.add("spec.autoscale.targetQueueTime", "must not be negative")
		}
		if a.ScaleDownDelay < 0 {
			e.add("spec.autoscale.scaleDownDelay", "must not be negative")
		}
	}
	switch s.Router.Retry {
	case "", "all", "safe", "none":
	default:
		e.add("spec.router.retry", "must be all, safe or none")
	}
	if s.Router.MaxInflightPerReplica < 0 {
		e.add("spec.router.maxInflightPerReplica", "must not be negative")
	}
	if s.Router.QueueTimeout < 0 {
		e.add("spec.router.queueTimeout", "must not be negative")
	}
	if s.Rollout.MaxSurge < 0 || s.Rollout.MaxSurge > MaxDeploymentReplicas {
		e.add("spec.rollout.maxSurge", "must be between 0 and %d", MaxDeploymentReplicas)
	}
	if s.Rollout.DrainTimeout < 0 {
		e.add("spec.rollout.drainTimeout", "must not be negative")
	}
	if s.Rollout.ReadyTimeout < 0 {
		e.add("spec.rollout.readyTimeout", "must not be negative")
	}
	return e.err()
}

// DecodeDeployment reads, defaults and validates a deployment document.
func DecodeDeployment(data []byte) (*Deployment, error) {
	var d Deployment
	if err := Decode(data, &d); err != nil {
		return nil, err
	}
	DefaultDeployment(&d)
	if err := ValidateDeployment(&d); err != nil {
		return nil, err
	}
	return &d, nil
}
