package serving

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"gpucloud/internal/api"
)

// memStore keeps jobs in memory, validating them as the API does.
type memStore struct {
	jobs      map[string]*api.Job
	cancelled []string
	deleted   []string
	addrs     map[string]string
}

func (m *memStore) CreateJob(ctx context.Context, j *api.Job) error {
	api.DefaultJob(j)
	if err := api.ValidateJob(j); err != nil {
		return err
	}
	if _, ok := m.jobs[j.Metadata.ID]; ok {
		return fmt.Errorf("job %s exists", j.Metadata.ID)
	}
	j.Status.Phase = api.PhasePending
	m.jobs[j.Metadata.ID] = j
	return nil
}

func (m *memStore) CancelJob(ctx context.Context, id, reason string) error {
	m.cancelled = append(m.cancelled, id)
	m.jobs[id].Status.Phase = api.PhaseCancelled
	return nil
}

func (m *memStore) DeleteJob(ctx context.Context, id string) error {
	m.deleted = append(m.deleted, id)
	delete(m.jobs, id)
	return nil
}

func (m *memStore) ListJobs(ctx context.Context, labels map[string]string) ([]api.Job, error) {
	var out []api.Job
	for _, id := range sortedIDs(m.jobs) {
		j := m.jobs[id]
		match := true
		for k, v := range labels {
			match = match && j.Metadata.Labels[k] == v
		}
		if match {
			out = append(out, *j)
		}
	}
	return out, nil
}

func (m *memStore) NodeAddress(node string) string { return m.addrs[node] }

func sortedIDs(m map[string]*api.Job) []string { return slices.Sorted(maps.Keys(m)) }

func TestJobDriver(t *testing.T) {
	store := &memStore{jobs: map[string]*api.Job{}, addrs: map[string]string{"ndv5-0007": "10.0.0.7"}}
	d := &JobDriver{Store: store}
	name := strings.Repeat("a", 63) // the longest deployment name
	tmpl := Template{
		Command: []string{"python3", "-m", "http.server", "$PORT"},
		Env:     map[string]string{"MODEL": "llama"},
		Queue:   "serving", GPUs: 2, Priority: 100,
	}
	spec := ReplicaSpec{Deployment: name, Tenant: "acme", Revision: tmpl.Revision(), Template: tmpl}
	id, err := d.Start(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	if m := api.ValidName(id); m != "" {
		t.Fatalf("job ID %q: %s", id, m)
	}
	j := store.jobs[id]
	port := strconv.Itoa(ReplicaPort(id))
	want := api.JobSpec{
		Queue: "serving", Replicas: 1, GPUsPerReplica: 2, TensorParallel: 2, Launch: api.LaunchPerNode,
		Command:  []string{"python3", "-m", "http.server", port},
		Env:      map[string]string{"MODEL": "llama", "PORT": port, "GPUCLOUD_DEPLOYMENT": name, "GPUCLOUD_REVISION": spec.Revision},
		Priority: 100,
	}
	if diff := cmp.Diff(want, j.Spec); diff != "" {
		t.Errorf("job spec (-want +got):\n%s", diff)
	}
	if j.Metadata.Tenant != "acme" || j.Metadata.Labels[LabelDeployment] != name || j.Metadata.Labels[LabelRevision] != spec.Revision {
		t.Errorf("metadata %+v", j.Metadata)
	}
	if p := ReplicaPort(id); p < 20000 || p >= 50000 {
		t.Errorf("port %d out of range", p)
	}

	list := func() []Replica {
		t.Helper()
		rs, err := d.Replicas(context.Background(), name)
		if err != nil {
			t.Fatal(err)
		}
		return rs
	}
	if rs := list(); len(rs) != 1 || rs[0].Phase != Pending || rs[0].Revision != spec.Revision {
		t.Fatalf("pending: %+v", rs)
	}
	j.Status.Phase = api.PhaseRunning
	j.Status.Placement = &api.Placement{Groups: []api.PlacementGroup{{Hosts: "ndv5-0007", GPUs: "2-3"}}, Nodes: 1, GPUs: 2, Replicas: 1}
	if rs := list(); rs[0].Phase != Running || rs[0].Addr != "10.0.0.7:"+port {
		t.Fatalf("running: %+v", rs)
	}
	for phase, failed := range map[api.Phase]bool{api.PhaseFailed: true, api.PhaseSucceeded: true, api.PhaseCancelled: false} {
		j.Status.Phase = phase
		if rs := list(); rs[0].Phase != Exited || rs[0].Failed != failed {
			t.Errorf("%s: %+v", phase, rs)
		}
	}
	j.Status.Phase = api.PhaseRunning
	if err := d.Stop(context.Background(), id); err != nil || len(store.cancelled) != 1 {
		t.Fatalf("stop: %v %v", err, store.cancelled)
	}
	if rs := list(); rs[0].Phase != Exited || rs[0].Failed {
		t.Fatalf("after stop: %+v", rs)
	}
	if err := d.Forget(context.Background(), id); err != nil || len(list()) != 0 {
		t.Fatalf("forget: %v %v", err, list())
	}
	// Another deployment's jobs are not listed.
	other := spec
	other.Deployment = "other"
	if _, err := d.Start(context.Background(), other); err != nil {
		t.Fatal(err)
	}
	if rs := list(); len(rs) != 0 {
		t.Fatalf("listed another deployment's replicas: %+v", rs)
	}
}

func TestRevisionAndExpandArgs(t *testing.T) {
	a := Template{Command: []string{"srv"}, Env: map[string]string{"A": "1", "B": "2"}}
	b := Template{Command: []string{"srv"}, Env: map[string]string{"B": "2", "A": "1"}}
	if a.Revision() != b.Revision() {
		t.Error("equal templates have different revisions")
	}
	b.Env["A"] = "3"
	if a.Revision() == b.Revision() {
		t.Error("different templates share a revision")
	}
	got := ExpandArgs([]string{"--port=$PORT", "${PORT}", "$HOME", "$$", "plain"}, map[string]string{"PORT": "8000"})
	if diff := cmp.Diff([]string{"--port=8000", "8000", "${HOME}", "$", "plain"}, got); diff != "" {
		t.Errorf("ExpandArgs (-want +got):\n%s", diff)
	}
}
