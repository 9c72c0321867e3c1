package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"gpucloud/internal/api"
	"gpucloud/internal/serving"
	"gpucloud/internal/serving/autoscale"
	"gpucloud/internal/serving/router"
	"gpucloud/internal/store"
)

// Inference deployments (kind: Deployment). The objects live in etcd
// under store.DeploymentsKey; every replica serves the API for them from
// etcd. The leader runs a serving.Manager: one controller per deployment,
// each replica a job of one gang through the scheduler (serving.JobDriver
// over jobStore), and the router mounted at /v1/deployments/NAME/. The
// leader writes each deployment's status back every few seconds, so GET
// on any replica shows it.
//
// Followers do not route: draining lives in the leader's controller (it
// stops a replica once its own router shows nothing in flight), which a
// follower's router would not see. A follower forwards traffic to the
// leader (each replica advertises its URL under store.ReplicasKey), so a
// load balancer may send it to any replica; when it cannot (no leader
// yet, the leader unreachable, or the request already forwarded once) it
// answers 503 with Retry-After: 1.

// deploymentStep paces the leader's serving loop (tests shorten it).
var deploymentStep = time.Second

// deploymentStatusEvery paces the status written back to etcd.
var deploymentStatusEvery = 2 * time.Second

// deployments is the serving side of a server replica.
type deployments struct {
	s      *Server
	router *router.Router
	log    *slog.Logger
	step   time.Duration // deploymentStep when the server was made

	leaderMu  sync.Mutex
	leaderURL *url.URL // the leader's advertised API, as last looked up
	leaderAt  time.Time

	running sync.Mutex // held by the leading term; a new term waits for the old one

	mu       sync.Mutex
	mgr      *serving.Manager  // while leading
	tenants  map[string]string // deployment -> tenant, of those the manager runs
	applied  map[string]string // deployment -> the stored spec last applied
	deleting map[string]bool   // deleted from etcd; the manager drains them
	refused  map[string]string // deployment -> why its controller refused the spec
}

func newDeployments(s *Server) *deployments {
	d := &deployments{s: s, log: s.log.With("part", "serving"), router: router.New(router.Config{Logger: s.log}), step: deploymentStep}
	s.metrics.reg.MustRegister(d.router)
	return d
}

func (s *Server) deploymentRoutes() []route {
	return []route{
		{method: "POST", path: "/v1/deployments", access: accessUser, summary: "Create an inference deployment (JSON or YAML)", req: api.Deployment{}, resp: api.Deployment{}, handler: s.createDeployment},
		{method: "GET", path: "/v1/deployments", access: accessUser, summary: "List deployments with their status (?tenant=)", resp: api.List[api.Deployment]{}, handler: s.listDeployments},
		{method: "GET", path: "/v1/deployments/{name}", access: accessUser, summary: "Get a deployment", resp: api.Deployment{}, handler: s.getDeployment},
		{method: "PUT", path: "/v1/deployments/{name}", access: accessUser, summary: "Create or replace a deployment (a rolling update when the replicas' template changed)", req: api.Deployment{}, resp: api.Deployment{}, handler: s.putDeployment},
		{method: "DELETE", path: "/v1/deployments/{name}", access: accessUser, summary: "Delete a deployment: its replicas drain and stop", resp: api.Status{}, handler: s.deleteDeployment},
	}
}

// readDeployment decodes a stored deployment.
func readDeployment(kv store.KV) (*api.Deployment, error) {
	var d api.Deployment
	if err := json.Unmarshal(kv.Value, &d); err != nil {
		return nil, fmt.Errorf("%s: %w", kv.Key, err)
	}
	d.Metadata.ResourceVersion = kv.ModRev
	return &d, nil
}

// admitDeployment checks a submitted deployment against the caller and
// the state, and fills in its tenant and queue.
func (s *Server) admitDeployment(r *http.Request, d *api.Deployment) error {
	if d.Status != (api.DeploymentStatus{}) {
		return fieldErr("status", "is set by the server")
	}
	tenant, queue, err := s.tenantQueue(r.Context(), principalOf(r), d.Metadata.Tenant, d.Spec.Queue, "deploys", s.fresh)
	if err != nil {
		return err
	}
	d.Metadata.Tenant, d.Spec.Queue = tenant, queue
	return nil
}

func decodeDeploymentBody(r *http.Request) (*api.Deployment, error) {
	b, err := readBody(r)
	if err != nil {
		return nil, err
	}
	return api.DecodeDeployment(b)
}

func (s *Server) createDeployment(w http.ResponseWriter, r *http.Request) error {
	d, err := decodeDeploymentBody(r)
	if err != nil {
		return err
	}
	return s.storeNewDeployment(w, r, d)
}

func (s *Server) storeNewDeployment(w http.ResponseWriter, r *http.Request, d *api.Deployment) error {
	if err := s.admitDeployment(r, d); err != nil {
		return err
	}
	now := time.Now().UTC()
	d.Metadata.CreatedAt, d.Metadata.ResourceVersion = now, 0
	name := d.Metadata.Name
	rev, err := s.createWith(r.Context(), store.DeploymentsKey+name, mustJSON(d),
		[]clientv3.Cmp{
			clientv3.Compare(clientv3.CreateRevision(store.TenantsKey+d.Metadata.Tenant), ">", 0),
			clientv3.Compare(clientv3.CreateRevision(store.QueuesKey+d.Spec.Queue), ">", 0),
		},
		eventOp(api.Event{Time: now, Reason: "Created", Kind: api.KindDeployment, Name: name, Tenant: d.Metadata.Tenant,
			Message: fmt.Sprintf("%d-%d replicas of %d GPUs on queue %s", d.Spec.Replicas.Min, d.Spec.Replicas.Max, d.Spec.GPUsPerReplica, d.Spec.Queue)}))
	if errors.Is(err, store.ErrExists) {
		// Names are global: they are the router's paths.
		return errConflict("deployment %s already exists", name)
	}
	if err != nil {
		return err
	}
	s.wrote(rev)
	d.Metadata.ResourceVersion = rev
	return writeJSON(w, http.StatusCreated, d)
}

// visibleDeployment reads a deployment from etcd if the caller may see it;
// other tenants' deployments are "not found".
func (s *Server) visibleDeployment(r *http.Request, name string) (*api.Deployment, error) {
	kv, err := s.store.Get(r.Context(), store.DeploymentsKey+name)
	if errors.Is(err, store.ErrNotFound) {
		return nil, errNotFound("deployment " + name)
	}
	if err != nil {
		return nil, err
	}
	d, err := readDeployment(kv)
	if err != nil {
		return nil, err
	}
	if !principalOf(r).canSeeTenant(d.Metadata.Tenant) {
		return nil, errNotFound("deployment " + name)
	}
	return d, nil
}

func (s *Server) listDeployments(w http.ResponseWriter, r *http.Request) error {
	p := principalOf(r)
	tenant := r.URL.Query().Get("tenant")
	if !p.admin() {
		if tenant != "" && tenant != p.tenant {
			return errForbidden("a tenant token lists its own tenant's deployments only")
		}
		tenant = p.tenant
	}
	kvs, rev, err := s.store.List(r.Context(), store.DeploymentsKey)
	if err != nil {
		return err
	}
	out := api.List[api.Deployment]{Items: []api.Deployment{}, ResourceVersion: rev}
	for _, kv := range kvs {
		d, err := readDeployment(kv)
		if err != nil {
			s.log.Error("deployments: undecodable object skipped", "err", err)
			continue
		}
		if tenant != "" && d.Metadata.Tenant != tenant {
			continue
		}
		s.deploy.liveStatus(d)
		out.Items = append(out.Items, *d)
	}
	sort.Slice(out.Items, func(i, j int) bool { return out.Items[i].Metadata.Name < out.Items[j].Metadata.Name })
	return writeJSON(w, 200, out)
}

func (s *Server) getDeployment(w http.ResponseWriter, r *http.Request) error {
	d, err := s.visibleDeployment(r, r.PathValue("name"))
	if err != nil {
		return err
	}
	s.deploy.liveStatus(d)
	return writeJSON(w, 200, d)
}

// putDeployment creates a deployment or replaces its spec (metadata.name
// and the tenant stay; the status is the server's).
func (s *Server) putDeployment(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	d, err := decodeDeploymentBody(r)
	if err != nil {
		return err
	}
	if d.Metadata.Name != name {
		return fieldErr("metadata.name", fmt.Sprintf("must be the name in the path (%s)", name))
	}
	for attempt := 0; attempt < 10; attempt++ {
		kv, err := s.store.Get(r.Context(), store.DeploymentsKey+name)
		if errors.Is(err, store.ErrNotFound) {
			return s.storeNewDeployment(w, r, d)
		}
		if err != nil {
			return err
		}
		old, err := readDeployment(kv)
		if err != nil {
			return err
		}
		if !principalOf(r).canSeeTenant(old.Metadata.Tenant) {
			// Taken by another tenant: names are global.
			return errConflict("deployment %s already exists", name)
		}
		if d.Metadata.Tenant != "" && d.Metadata.Tenant != old.Metadata.Tenant {
			return fieldErr("metadata.tenant", "cannot change (it is "+old.Metadata.Tenant+")")
		}
		nd := *d
		nd.Metadata.Tenant = old.Metadata.Tenant
		if err := s.admitDeployment(r, &nd); err != nil {
			return err
		}
		nd.Metadata.Tenant = old.Metadata.Tenant
		if string(mustJSON(nd.Spec)) == string(mustJSON(old.Spec)) && string(mustJSON(nd.Metadata.Labels)) == string(mustJSON(old.Metadata.Labels)) {
			return writeJSON(w, 200, old) // unchanged: no write, no event
		}
		nd.Metadata.CreatedAt, nd.Metadata.ResourceVersion, nd.Status = old.Metadata.CreatedAt, 0, old.Status
		msg := "spec changed"
		if oldRev, newRev := servingSpec(old).Template.Revision(), servingSpec(&nd).Template.Revision(); oldRev != newRev {
			msg = fmt.Sprintf("rolling update from revision %s to %s", oldRev, newRev)
		}
		rev, err := s.store.CAS(r.Context(), store.DeploymentsKey+name, mustJSON(&nd), kv.ModRev,
			eventOp(api.Event{Reason: "Updated", Kind: api.KindDeployment, Name: name, Tenant: nd.Metadata.Tenant, Message: msg}))
		if errors.Is(err, store.ErrConflict) {
			continue // the leader wrote the status meanwhile
		}
		if err != nil {
			return err
		}
		s.wrote(rev)
		nd.Metadata.ResourceVersion = rev
		return writeJSON(w, 200, &nd)
	}
	return errConflict("deployment %s kept changing; retry", name)
}

func (s *Server) deleteDeployment(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	d, err := s.visibleDeployment(r, name)
	if err != nil {
		return err
	}
	rev, err := s.store.Txn(r.Context(), nil, []clientv3.Op{clientv3.OpDelete(store.DeploymentsKey + name),
		eventOp(api.Event{Reason: "Deleted", Kind: api.KindDeployment, Name: name, Tenant: d.Metadata.Tenant, Message: "replicas drain and stop"})})
	if err != nil {
		return err
	}
	s.wrote(rev)
	return writeJSON(w, 200, api.Status{Message: "deployment " + name + " deleted; its replicas drain and stop"})
}

// servingSpec maps the API type onto what the controller runs.
func servingSpec(d *api.Deployment) serving.Spec {
	s := d.Spec
	spec := serving.Spec{
		Name: d.Metadata.Name, Tenant: d.Metadata.Tenant,
		Template: serving.Template{
			Command: s.Command, Env: s.Env, WorkingDir: s.WorkingDir,
			Queue: s.Queue, GPUs: s.GPUsPerReplica, TensorParallel: s.TensorParallel,
			GPUModel: s.GPUModel, Priority: int32(s.Priority), Preemptible: s.Preemptible,
		},
		Min: s.Replicas.Min, Max: s.Replicas.Max,
		Router: router.Options{
			ReadinessPath: s.Readiness.Path, CheckInterval: time.Duration(s.Readiness.Period),
			CheckTimeout: time.Duration(s.Readiness.Timeout), Retry: router.RetryPolicy(s.Router.Retry),
			MaxInflightPerReplica: s.Router.MaxInflightPerReplica, QueueTimeout: time.Duration(s.Router.QueueTimeout),
			ForwardAuthorization: s.Router.ForwardAuthorization,
		},
		MaxSurge: s.Rollout.MaxSurge, DrainTimeout: time.Duration(s.Rollout.DrainTimeout),
		ReadyTimeout: time.Duration(s.Rollout.ReadyTimeout),
	}
	if a := s.Autoscale; a != nil {
		spec.Autoscale = &autoscale.Config{TargetInflight: a.TargetInflight,
			TargetQueueTime: time.Duration(a.TargetQueueTime), ScaleDownWindow: time.Duration(a.ScaleDownDelay)}
	}
	return spec
}

// traffic proxies /v1/deployments/NAME/... to the deployment's replicas.
// It takes every method and applies no body limit (the router buffers at
// most 1 MiB for retries and streams the rest).
func (d *deployments) traffic() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s := d.s
		p, err := s.authenticate(r)
		if err == nil && !allowed(p, accessUser) {
			err = errForbidden(fmt.Sprintf("a %s token may not call deployments", p.role))
		}
		if err != nil {
			writeError(w, err)
			return
		}
		name := r.PathValue("name")
		if !s.IsLeader() {
			if r.Header.Get(forwardedBy) == "" {
				if u := d.leader(r.Context()); u != nil {
					d.forward(w, r, u)
					return
				}
			}
			w.Header().Set("Retry-After", "1")
			writeError(w, &httpError{code: http.StatusServiceUnavailable,
				msg: "deployments are served by the leader replica, which this replica cannot reach now (GET /readyz says which leads); retry"})
			return
		}
		d.mu.Lock()
		tenant, running := d.tenants[name]
		refused := d.refused[name]
		d.mu.Unlock()
		if running && p.canSeeTenant(tenant) {
			d.router.ServeHTTP(w, r)
			return
		}
		if !running {
			// Created a moment ago: the leader applies it within a step.
			if dep, err := s.visibleDeployment(r.WithContext(context.WithValue(r.Context(), ctxKey{}, p)), name); err == nil && dep != nil {
				if refused != "" {
					writeError(w, &httpError{code: http.StatusServiceUnavailable, msg: "deployment " + name + " cannot run: " + refused})
					return
				}
				w.Header().Set("Retry-After", "1")
				writeError(w, &httpError{code: http.StatusServiceUnavailable, msg: "deployment " + name + " is starting; retry"})
				return
			}
		}
		writeError(w, errNotFound("deployment "+name))
	})
}

// liveStatus puts the leader's current view into d's status (on a
// follower, the status the leader last wrote stays).
func (d *deployments) liveStatus(dep *api.Deployment) {
	d.mu.Lock()
	mgr := d.mgr
	d.mu.Unlock()
	if mgr == nil {
		return
	}
	if st, ok := d.status(mgr, dep.Metadata.Name); ok {
		dep.Status = st
	}
}

// status is a deployment's status as the manager sees it now.
func (d *deployments) status(mgr *serving.Manager, name string) (api.DeploymentStatus, bool) {
	now := time.Now().UTC()
	d.mu.Lock()
	why := d.refused[name]
	d.mu.Unlock()
	st, ok := mgr.Status(name)
	if why != "" {
		out := api.DeploymentStatus{Message: "spec refused by the controller: " + why, ObservedAt: now}
		if ok {
			out = apiStatus(st, now)
			out.Message = strings.TrimSpace(out.Message + " (the last change was refused: " + why + ")")
		}
		return out, true
	}
	if !ok {
		return api.DeploymentStatus{}, false
	}
	return apiStatus(st, now), true
}

func apiStatus(st serving.Status, now time.Time) api.DeploymentStatus {
	out := api.DeploymentStatus{
		Revision: st.Revision, Desired: st.Desired, Ready: st.Rollout.Ready, Updated: st.Rollout.Updated,
		UpdatedReady: st.Rollout.UpdatedReady, InFlight: st.InFlight, Queued: st.Queued,
		ScaleReason: st.Scale.Reason, Message: st.Rollout.Message, ObservedAt: now,
	}
	if st.Error != "" {
		out.Message = strings.TrimSpace(out.Message + " " + "error: " + st.Error)
	}
	return out
}

// lead runs the deployments while this replica leads (until ctx ends).
func (d *deployments) lead(ctx context.Context) {
	d.running.Lock()
	defer d.running.Unlock()
	mgr := serving.NewManager(d.router, &serving.JobDriver{Store: jobStore{d.s}}, d.log)
	d.mu.Lock()
	d.mgr, d.tenants, d.applied, d.deleting, d.refused = mgr, map[string]string{}, map[string]string{}, map[string]bool{}, map[string]string{}
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.mgr, d.tenants = nil, map[string]string{}
		d.mu.Unlock()
		// The next leader's router takes over; requests in flight here
		// finish.
		for _, name := range d.router.Deployments() {
			d.router.RemoveDeployment(name)
		}
	}()
	t := time.NewTicker(d.step)
	defer t.Stop()
	var lastStatus time.Time
	for ctx.Err() == nil {
		stored, err := d.sync(ctx, mgr)
		if err != nil && ctx.Err() == nil {
			d.log.Warn("serving: reading deployments", "err", err)
		}
		if err := mgr.Step(ctx, time.Now()); err != nil && ctx.Err() == nil {
			d.log.Warn("serving step", "err", err)
		}
		if err == nil && time.Since(lastStatus) >= deploymentStatusEvery {
			lastStatus = time.Now()
			d.writeStatus(ctx, mgr, stored)
		}
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
}

// sync brings the manager in line with the deployments in etcd, and
// cancels replica jobs whose deployment is gone (deleted while no leader
// ran it to the end). It returns the stored deployments.
func (d *deployments) sync(ctx context.Context, mgr *serving.Manager) (map[string]*api.Deployment, error) {
	kvs, _, err := d.s.store.List(ctx, store.DeploymentsKey)
	if err != nil {
		return nil, err
	}
	want := make(map[string]*api.Deployment, len(kvs))
	for _, kv := range kvs {
		dep, err := readDeployment(kv)
		if err != nil {
			d.log.Error("deployments: undecodable object skipped", "err", err)
			continue
		}
		want[dep.Metadata.Name] = dep
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for name := range d.deleting {
		if _, ok := mgr.Status(name); !ok {
			delete(d.deleting, name)
			delete(d.tenants, name)
		}
	}
	for name := range d.applied {
		if _, ok := want[name]; !ok {
			mgr.Delete(name)
			d.deleting[name] = true
			delete(d.applied, name)
			d.log.Info("deployment deleted: scaling to zero", "deployment", name)
		}
	}
	for name, dep := range want {
		if d.deleting[name] {
			continue // a new deployment of this name waits for the old one's replicas to go
		}
		key := string(mustJSON(dep.Spec)) + "\x00" + dep.Metadata.Tenant
		if d.applied[name] == key {
			continue
		}
		if err := mgr.Apply(servingSpec(dep)); err != nil {
			if d.refused[name] != err.Error() {
				d.log.Error("deployment refused by its controller", "deployment", name, "err", err)
			}
			d.refused[name] = err.Error()
			continue
		}
		delete(d.refused, name)
		d.applied[name], d.tenants[name] = key, dep.Metadata.Tenant
	}
	d.sweepOrphans(ctx, mgr, want)
	return want, nil
}

// sweepOrphans cancels (and, once finished, deletes) replica jobs of
// deployments that neither etcd nor the manager knows. Caller holds d.mu.
func (d *deployments) sweepOrphans(ctx context.Context, mgr *serving.Manager, want map[string]*api.Deployment) {
	type orphan struct {
		id, deployment string
		terminal       bool
	}
	var orphans []orphan
	st := d.s.st
	st.mu.RLock()
	for id, rec := range st.jobs {
		l := rec.job.Metadata.Labels
		name, rev := l[serving.LabelDeployment], l[serving.LabelRevision]
		if name == "" || rev == "" || !strings.HasPrefix(id, name[:min(len(name), 40)]+"-") {
			continue
		}
		if _, ok := want[name]; ok || d.deleting[name] || d.applied[name] != "" {
			continue
		}
		orphans = append(orphans, orphan{id, name, rec.job.Status.Phase.Terminal()})
	}
	st.mu.RUnlock()
	js := jobStore{d.s}
	for _, o := range orphans {
		if _, ok := mgr.Status(o.deployment); ok {
			continue
		}
		var err error
		if o.terminal {
			err = js.DeleteJob(ctx, o.id)
		} else {
			err = js.CancelJob(ctx, o.id, "its deployment was deleted")
		}
		if err != nil && ctx.Err() == nil {
			d.log.Warn("serving: orphan replica job", "job", o.id, "err", err)
		}
	}
}

// writeStatus writes each deployment's status to etcd when it changed
// (ObservedAt aside). The writes are advisory: a lost compare (a PUT
// meanwhile) waits for the next round.
func (d *deployments) writeStatus(ctx context.Context, mgr *serving.Manager, stored map[string]*api.Deployment) {
	now := time.Now().UTC()
	for name, dep := range stored {
		ns, ok := d.status(mgr, name)
		if !ok {
			continue
		}
		old := dep.Status
		old.ObservedAt, ns.ObservedAt = time.Time{}, time.Time{}
		if old == ns {
			continue
		}
		ns.ObservedAt = now
		nd := *dep
		nd.Status, nd.Metadata.ResourceVersion = ns, 0
		rev, err := d.s.store.CAS(ctx, store.DeploymentsKey+name, mustJSON(&nd), dep.Metadata.ResourceVersion)
		if err == nil {
			d.s.wrote(rev)
		} else if !errors.Is(err, store.ErrConflict) && ctx.Err() == nil {
			d.log.Warn("serving: writing status", "deployment", name, "err", err)
		}
	}
}

// jobStore is the server as serving.JobDriver sees it: replica jobs go
// through the same checks and records as POST /v1/jobs.
type jobStore struct{ s *Server }

var _ serving.JobStore = jobStore{}

func (js jobStore) CreateJob(ctx context.Context, j *api.Job) error {
	s := js.s
	api.DefaultJob(j)
	if err := api.ValidateJob(j); err != nil {
		return err
	}
	tenant, queue := j.Metadata.Tenant, j.Spec.Queue
	s.st.mu.RLock()
	t, q := s.st.tenants[tenant], s.st.queues[queue]
	s.st.mu.RUnlock()
	if _, msg := admission(t, q, tenant, queue); msg != "" {
		return errors.New(msg)
	}
	_, err := s.storeJob(ctx, j,
		fmt.Sprintf("replica of deployment %s: %d GPUs on queue %s", j.Metadata.Labels[serving.LabelDeployment], j.Spec.GPUsPerReplica, queue))
	return err
}

// CancelJob cancels a replica job; one gone or ended already is no error.
func (js jobStore) CancelJob(ctx context.Context, id, reason string) error {
	_, _, err := js.s.cancelStoredJob(ctx, id, reason)
	switch {
	case errors.Is(err, store.ErrNotFound): // only Get says so: the job is gone
		return nil
	case errors.Is(err, errKeptChanging):
		return fmt.Errorf("job %s kept changing", id)
	}
	return err
}

func (js jobStore) DeleteJob(ctx context.Context, id string) error {
	s := js.s
	kv, err := s.store.Get(ctx, store.JobsKey+id)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	var j api.Job
	if err := json.Unmarshal(kv.Value, &j); err != nil {
		return err
	}
	if !j.Status.Phase.Terminal() {
		return fmt.Errorf("job %s is %s", id, j.Status.Phase)
	}
	return s.deleteStoredJob(ctx, id, kv.ModRev)
}

// ListJobs returns the replica jobs of a deployment: jobs with the labels,
// of the deployment's tenant only (labels are the submitter's to set; a
// tenant cannot slip a job of its own into another tenant's deployment).
// It waits for the state to hold this replica's own writes, so a replica
// just started is never missed (and started again).
func (js jobStore) ListJobs(ctx context.Context, labels map[string]string) ([]api.Job, error) {
	s := js.s
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := s.syncTo(ctx, s.lastWrite.Load()); err != nil {
		return nil, fmt.Errorf("state catching up with etcd: %w", err)
	}
	tenant := ""
	if name := labels[serving.LabelDeployment]; name != "" {
		s.deploy.mu.Lock()
		tenant = s.deploy.tenants[name]
		s.deploy.mu.Unlock()
	}
	var out []api.Job
	s.st.mu.RLock()
	defer s.st.mu.RUnlock()
	for _, rec := range s.st.jobs {
		j := rec.job
		if tenant != "" && j.Metadata.Tenant != tenant {
			continue
		}
		ok := true
		for k, v := range labels {
			if j.Metadata.Labels[k] != v {
				ok = false
				break
			}
		}
		if ok {
			out = append(out, *j)
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].Metadata.ID < out[b].Metadata.ID })
	return out, nil
}

func (js jobStore) NodeAddress(node string) string {
	js.s.st.mu.RLock()
	defer js.s.st.mu.RUnlock()
	if n := js.s.st.nodes[node]; n != nil {
		return n.node.Status.Address
	}
	return ""
}

// forwardedBy marks a request a follower forwarded to the leader: a
// replica that gets one without leading (leadership moved meanwhile)
// answers 503 rather than forward it again.
const forwardedBy = "X-Gpucloud-Forwarded-By"

// leader is the leader's advertised API URL, looked up in etcd at most
// once a second; nil when there is no leader or it advertised none.
func (d *deployments) leader(ctx context.Context) *url.URL {
	d.leaderMu.Lock()
	defer d.leaderMu.Unlock()
	if time.Since(d.leaderAt) < time.Second {
		return d.leaderURL
	}
	d.leaderAt, d.leaderURL = time.Now(), nil
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	cli := d.s.store.Client()
	resp, err := cli.Get(ctx, store.LeaderKey, clientv3.WithFirstCreate()...)
	if err != nil || len(resp.Kvs) == 0 {
		return nil
	}
	id := string(resp.Kvs[0].Value)
	if id == d.s.cfg.ID {
		return nil // this replica, not leading yet or any more
	}
	ur, err := cli.Get(ctx, store.ReplicasKey+id)
	if err != nil || len(ur.Kvs) == 0 {
		return nil
	}
	u, err := url.Parse(string(ur.Kvs[0].Value))
	if err != nil || u.Host == "" {
		return nil
	}
	d.leaderURL = u
	return u
}

// forward proxies r to the leader at u, streaming both ways; if the leader
// cannot be reached the client gets 503 with Retry-After, as from a
// follower that knows no leader.
func (d *deployments) forward(w http.ResponseWriter, r *http.Request, u *url.URL) {
	p := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
			pr.Out.Host = u.Host
			pr.Out.Header.Set(forwardedBy, d.s.cfg.ID)
			pr.SetXForwarded()
		},
		FlushInterval: -1, // token streams go through as they come
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			d.log.Warn("forwarding deployment traffic to the leader", "leader", u.String(), "err", err)
			d.leaderMu.Lock()
			d.leaderAt = time.Time{} // look again next time
			d.leaderMu.Unlock()
			w.Header().Set("Retry-After", "1")
			writeError(w, &httpError{code: http.StatusServiceUnavailable, msg: "the leader replica is not reachable from this one; retry"})
		},
	}
	p.ServeHTTP(w, r)
}
