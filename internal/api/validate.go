package api

import (
	"fmt"
	"regexp"
	"strings"

	"gpucloud/internal/topology"
)

// FieldError is one problem with one field, named by its path in the
// document ("spec.replicas").
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

func (e FieldError) Error() string { return e.Field + ": " + e.Message }

// ValidationError lists every problem found in a document, so a user fixes
// them in one round.
type ValidationError struct {
	Fields []FieldError
}

func (e *ValidationError) Error() string {
	parts := make([]string, len(e.Fields))
	for i, f := range e.Fields {
		parts[i] = f.Error()
	}
	return strings.Join(parts, "; ")
}

// errs collects field errors.
type errs []FieldError

func (e *errs) add(field, format string, args ...any) {
	*e = append(*e, FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
}

func (e errs) err() error {
	if len(e) == 0 {
		return nil
	}
	return &ValidationError{Fields: e}
}

// Limits that keep every object small in etcd.
const (
	MaxReplicas       = 1 << 17 // 131,072 replicas: a 1M-GPU gang of 8-GPU replicas
	MaxGPUsPerReplica = 64
	MaxCommandBytes   = 64 << 10
	MaxEnvBytes       = 64 << 10
	MaxEnvVars        = 256
	MaxMaxRestarts    = 1000
	MaxLabels         = 32
)

var (
	nameRE   = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	nodeRE   = regexp.MustCompile(`^[A-Za-z0-9]([-A-Za-z0-9._]*[A-Za-z0-9])?$`)
	envKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// reservedEnv are set by the agent for every rank; a job may not override
// them.
var reservedEnv = map[string]bool{
	"RANK": true, "LOCAL_RANK": true, "WORLD_SIZE": true, "LOCAL_WORLD_SIZE": true,
	"NODE_RANK": true, "NNODES": true, "MASTER_ADDR": true, "MASTER_PORT": true,
	"CUDA_VISIBLE_DEVICES": true, "GPUCLOUD_JOB": true, "GPUCLOUD_GENERATION": true,
}

// ValidName checks a DNS-label name (tenants, queues, jobs).
func ValidName(s string) string {
	switch {
	case s == "":
		return "must not be empty"
	case len(s) > 63:
		return "must be at most 63 characters"
	case !nameRE.MatchString(s):
		return "must be lower-case letters, digits and '-', starting and ending with a letter or digit"
	}
	return ""
}

// ValidNodeName checks a node name (host names may have dots, upper case,
// underscores).
func ValidNodeName(s string) string {
	switch {
	case s == "":
		return "must not be empty"
	case len(s) > 253:
		return "must be at most 253 characters"
	case !nodeRE.MatchString(s):
		return "must be letters, digits, '-', '.', '_'"
	}
	return ""
}

func checkName(e *errs, field, s string) {
	if m := ValidName(s); m != "" {
		e.add(field, "%s", m)
	}
}

func checkMeta(e *errs, m *ObjectMeta) {
	checkName(e, "metadata.name", m.Name)
	if m.ID != "" {
		checkName(e, "metadata.id", m.ID)
	}
	if len(m.Labels) > MaxLabels {
		e.add("metadata.labels", "at most %d labels", MaxLabels)
	}
	for k, v := range m.Labels {
		if len(k) == 0 || len(k) > 63 || len(v) > 253 {
			e.add("metadata.labels."+k, "keys are 1-63 characters, values at most 253")
		}
	}
}

func checkKind(e *errs, apiVersion, kind, want string) {
	if apiVersion != Version {
		e.add("apiVersion", "must be %q", Version)
	}
	if kind != want {
		e.add("kind", "must be %q", want)
	}
}

// DefaultJob fills in what a user may leave out. Validate calls it.
func DefaultJob(j *Job) {
	if j.APIVersion == "" {
		j.APIVersion = Version
	}
	if j.Kind == "" {
		j.Kind = KindJob
	}
	if j.Spec.Launch == "" {
		j.Spec.Launch = LaunchPerNode
	}
	// Empty and absent are the same; keep one form so stored jobs compare.
	if len(j.Spec.Env) == 0 {
		j.Spec.Env = nil
	}
	if len(j.Metadata.Labels) == 0 {
		j.Metadata.Labels = nil
	}
}

// ValidateJob checks a job submission (after DefaultJob). It does not
// check that the queue exists or that the tenant may use it: the server
// does, against its state.
func ValidateJob(j *Job) error {
	var e errs
	checkKind(&e, j.APIVersion, j.Kind, KindJob)
	checkMeta(&e, &j.Metadata)
	s := &j.Spec
	if s.Queue != "" {
		checkName(&e, "spec.queue", s.Queue)
	}
	switch {
	case s.Replicas < 1:
		e.add("spec.replicas", "must be at least 1")
	case s.Replicas > MaxReplicas:
		e.add("spec.replicas", "must be at most %d", MaxReplicas)
	}
	if s.MinReplicas < 0 || s.MinReplicas > s.Replicas {
		e.add("spec.minReplicas", "must be between 0 and spec.replicas (%d)", s.Replicas)
	}
	checkGPUsPerReplica(&e, s.GPUsPerReplica)
	if s.TensorParallel < 0 || (s.TensorParallel > 0 && s.GPUsPerReplica > 0 && s.TensorParallel > s.GPUsPerReplica*max(s.Replicas, 1)) {
		e.add("spec.tensorParallel", "must be between 0 and the gang's GPUs")
	}
	if len(s.GPUModel) > 63 {
		e.add("spec.gpuModel", "must be at most 63 characters")
	}
	switch s.Launch {
	case LaunchPerNode, LaunchPerGPU:
	default:
		e.add("spec.launch", "must be %q or %q", LaunchPerNode, LaunchPerGPU)
	}
	checkProcess(&e, s.Command, s.Env, s.WorkingDir, func(k string) bool { return reservedEnv[k] }, "rank")
	if m := s.RestartPolicy.MaxRestarts; m < 0 || m > MaxMaxRestarts {
		e.add("spec.restartPolicy.maxRestarts", "must be between 0 and %d", MaxMaxRestarts)
	}
	checkLevel(&e, "spec.topology.required", s.Topology.Required)
	checkLevel(&e, "spec.topology.preferred", s.Topology.Preferred)
	if s.EstimatedRuntime < 0 {
		e.add("spec.estimatedRuntime", "must not be negative")
	}
	if s.CheckpointInterval < 0 {
		e.add("spec.checkpointInterval", "must not be negative")
	}
	return e.err()
}

func checkGPUsPerReplica(e *errs, n int) {
	switch {
	case n < 1:
		e.add("spec.gpusPerReplica", "must be at least 1")
	case n > MaxGPUsPerReplica:
		e.add("spec.gpusPerReplica", "must be at most %d", MaxGPUsPerReplica)
	}
}

// checkProcess checks what a job's ranks or a deployment's replicas run:
// spec.command, spec.env and spec.workingDir. reserved tells the variables
// gpucloud sets for every one of them (the "unit": rank or replica).
func checkProcess(e *errs, command []string, env map[string]string, workingDir string, reserved func(string) bool, unit string) {
	if len(command) == 0 {
		e.add("spec.command", "must not be empty")
	} else if command[0] == "" {
		e.add("spec.command[0]", "must not be empty")
	}
	n := 0
	for _, c := range command {
		n += len(c)
	}
	if n > MaxCommandBytes {
		e.add("spec.command", "must be at most %d bytes", MaxCommandBytes)
	}
	if len(env) > MaxEnvVars {
		e.add("spec.env", "at most %d variables", MaxEnvVars)
	}
	n = 0
	for k, v := range env {
		n += len(k) + len(v)
		switch {
		case !envKeyRE.MatchString(k):
			e.add("spec.env."+k, "must be a shell variable name")
		case reserved(k):
			e.add("spec.env."+k, "is set by gpucloud for every %s", unit)
		}
	}
	if n > MaxEnvBytes {
		e.add("spec.env", "must be at most %d bytes", MaxEnvBytes)
	}
	if len(workingDir) > 4096 {
		e.add("spec.workingDir", "must be at most 4096 bytes")
	}
}

// TopologyLevels are the levels a job may require or prefer.
var TopologyLevels = []string{"nvlink", "node", "leaf", "block", "pod", "cluster"}

func checkLevel(e *errs, field, s string) {
	if s == "" {
		return
	}
	l, err := topology.ParseLevel(s)
	if err != nil || l < topology.LevelNVLink || l > topology.LevelCluster {
		e.add(field, "must be one of %s", strings.Join(TopologyLevels, ", "))
	}
}

// ValidateTenant checks a tenant.
func ValidateTenant(t *Tenant) error {
	var e errs
	if t.APIVersion == "" {
		t.APIVersion, t.Kind = Version, KindTenant
	}
	checkKind(&e, t.APIVersion, t.Kind, KindTenant)
	checkName(&e, "metadata.name", t.Metadata.Name)
	if t.Spec.DefaultQueue != "" {
		checkName(&e, "spec.defaultQueue", t.Spec.DefaultQueue)
	}
	if len(t.Spec.Description) > 1024 {
		e.add("spec.description", "must be at most 1024 characters")
	}
	return e.err()
}

// ValidateQueue checks a queue.
func ValidateQueue(q *Queue) error {
	var e errs
	if q.APIVersion == "" {
		q.APIVersion, q.Kind = Version, KindQueue
	}
	checkKind(&e, q.APIVersion, q.Kind, KindQueue)
	checkName(&e, "metadata.name", q.Metadata.Name)
	if q.Spec.Parent != "" {
		checkName(&e, "spec.parent", q.Spec.Parent)
		if q.Spec.Parent == q.Metadata.Name {
			e.add("spec.parent", "must not be the queue itself")
		}
	}
	if q.Spec.Quota < 0 {
		e.add("spec.quota", "must not be negative")
	}
	if q.Spec.QuotaRemainder && q.Spec.Parent != "" {
		e.add("spec.quotaRemainder", "only for a top-level queue")
	}
	if q.Spec.QuotaRemainder && q.Spec.Quota != 0 {
		e.add("spec.quotaRemainder", "leave spec.quota out with it")
	}
	if b := q.Spec.BorrowingLimit; b != nil && *b < 0 {
		e.add("spec.borrowingLimit", "must not be negative (leave it out for no limit)")
	}
	if q.Spec.Weight < 0 {
		e.add("spec.weight", "must not be negative")
	}
	if q.Spec.Weight == 0 {
		q.Spec.Weight = 1
	}
	for i, t := range q.Spec.Tenants {
		checkName(&e, fmt.Sprintf("spec.tenants[%d]", i), t)
	}
	return e.err()
}

// ValidateToken checks a token request.
func ValidateToken(t *TokenRequest) error {
	var e errs
	switch t.Role {
	case RoleTenant:
		checkName(&e, "tenant", t.Tenant)
	case RoleAdmin, RoleAgent:
		if t.Tenant != "" {
			e.add("tenant", "only tenant tokens belong to a tenant")
		}
	default:
		e.add("role", "must be admin, tenant or agent")
	}
	if len(t.Name) > 63 {
		e.add("name", "must be at most 63 characters")
	}
	if t.Node != "" {
		if t.Role != RoleAgent {
			e.add("node", "only agent tokens are bound to a node")
		} else if m := ValidNodeName(t.Node); m != "" {
			e.add("node", "%s", m)
		}
	}
	return e.err()
}

// ValidateRegistration checks a node registration.
func ValidateRegistration(r *NodeRegistration) error {
	var e errs
	if m := ValidNodeName(r.Name); m != "" {
		e.add("name", "%s", m)
	}
	if r.Address == "" || len(r.Address) > 253 {
		e.add("address", "must be a host name or IP address")
	}
	if len(r.Inventory.GPUs) > 64 {
		e.add("inventory.gpus", "at most 64 GPUs per node")
	}
	if len(r.Labels) > MaxLabels {
		e.add("labels", "at most %d labels", MaxLabels)
	}
	for k, v := range r.Labels {
		if len(k) == 0 || len(k) > 63 || len(v) > 253 {
			e.add("labels."+k, "keys are 1-63 characters, values at most 253")
		}
	}
	seen := map[int]bool{}
	for i, g := range r.Inventory.GPUs {
		f := fmt.Sprintf("inventory.gpus[%d]", i)
		if g.Index < 0 || g.Index >= 64 || seen[g.Index] {
			e.add(f+".index", "must be unique and between 0 and 63")
		}
		seen[g.Index] = true
		if g.UUID == "" {
			e.add(f+".uuid", "must not be empty")
		}
		if g.MemoryMiB < 0 {
			e.add(f+".memoryMiB", "must not be negative")
		}
	}
	for i := range r.Inventory.GPUs {
		if !seen[i] {
			e.add("inventory.gpus", "indices must be 0..%d", len(r.Inventory.GPUs)-1)
			break
		}
	}
	if len(r.Inventory.HCAs) > 64 {
		e.add("inventory.hcas", "at most 64 HCAs per node")
	}
	return e.err()
}
