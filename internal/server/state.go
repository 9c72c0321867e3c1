package server

import (
	"context"
	"encoding/json"
	"log/slog"
	"math/bits"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"gpucloud/internal/api"
	"gpucloud/internal/store"
)

// state is this replica's copy of everything under store.Prefix, kept by
// the store's reflector (list, then watch). Reads that may lag a little
// (lists, watches, auth, assignments) are served from it; writes go to
// etcd with compare-and-swap on the revisions it holds.
type state struct {
	log *slog.Logger

	mu      sync.RWMutex
	rev     int64
	synced  bool
	revCh   chan struct{} // closed and replaced whenever rev moves
	tenants map[string]*api.Tenant
	tokens  map[string]*tokenRec // by hash
	queues  map[string]*api.Queue
	jobs    map[string]*jobRec
	nodes   map[string]*nodeRec
	alive   map[string]int64                      // node -> lease ID
	reports map[string]map[string]*api.NodeReport // job -> node -> report
	onNode  map[string]map[string]bool            // node -> running job IDs
	boot    string
	// nodesGen moves when a node is added or deleted or its inventory
	// changes: the served fabric is rebuilt then.
	nodesGen uint64

	// What changed since the leader last looked.
	dirtyJobs   map[string]bool
	dirtyNodes  map[string]bool
	dirtyQueues bool
	dirtyAll    bool // a reset: the leader resyncs everything
	kick        chan struct{}

	subs map[*subscriber]bool
	// nodeWatchers counts the "nodes" subscribers: with none (the usual
	// case, while every agent holds an assignment stream) node changes
	// are not rendered for watchers at all.
	nodeWatchers int
}

type tokenRec struct {
	api.TokenInfo
}

type jobRec struct {
	job    *api.Job
	modRev int64
	// nodes is the expanded placement (nil unless Running).
	nodes []api.NodeGPUs
	// assign is every node's share, built once per job version.
	once   sync.Once
	assign []api.Assignment
	index  map[string]int // node -> index in nodes
}

type nodeRec struct {
	node   *api.Node
	modRev int64
}

// subscriber receives changes for a watch stream. Jobs and nodes streams
// get events; assignment streams get a signal and recompute their set.
type subscriber struct {
	kind   string // "jobs" | "nodes" | "assign"
	tenant string // jobs: only this tenant's ("" all)
	node   string // assign: this node
	events chan any
	signal chan struct{}
	closed bool
}

func newState(log *slog.Logger) *state {
	st := &state{log: log, revCh: make(chan struct{}), kick: make(chan struct{}, 1), subs: map[*subscriber]bool{}}
	st.clear()
	return st
}

func (st *state) clear() {
	st.tenants = map[string]*api.Tenant{}
	st.tokens = map[string]*tokenRec{}
	st.queues = map[string]*api.Queue{}
	st.jobs = map[string]*jobRec{}
	st.nodes = map[string]*nodeRec{}
	st.alive = map[string]int64{}
	st.reports = map[string]map[string]*api.NodeReport{}
	st.onNode = map[string]map[string]bool{}
	st.dirtyJobs = map[string]bool{}
	st.dirtyNodes = map[string]bool{}
}

// Reset implements store.Handler.
func (st *state) Reset(kvs []store.KV, rev int64) {
	evs := make([]store.Event, len(kvs))
	for i, kv := range kvs {
		evs[i] = store.Event{KV: kv}
	}
	pre := st.predecode(evs)
	st.mu.Lock()
	old := st.subs
	st.clear()
	for i, e := range evs {
		st.apply(e, pre[i])
	}
	st.dirtyAll = true
	st.synced = true
	// Streams cannot be told what they missed: close them, clients
	// reconnect and start from a fresh list.
	for s := range old {
		st.closeSub(s)
	}
	st.advance(rev)
	st.mu.Unlock()
	st.poke()
}

// Apply implements store.Handler.
func (st *state) Apply(evs []store.Event, rev int64) {
	pre := st.predecode(evs)
	st.mu.Lock()
	for i, e := range evs {
		st.apply(e, pre[i])
	}
	st.advance(rev)
	st.mu.Unlock()
	if len(evs) > 0 {
		st.poke()
	}
}

func (st *state) poke() {
	select {
	case st.kick <- struct{}{}:
	default:
	}
}

func (st *state) advance(rev int64) {
	if rev > st.rev {
		st.rev = rev
		close(st.revCh)
		st.revCh = make(chan struct{})
	}
}

// waitRev waits until the state reflects revision rev.
func (st *state) waitRev(ctx context.Context, rev int64) error {
	for {
		st.mu.RLock()
		ok, ch := st.rev >= rev && st.synced, st.revCh
		st.mu.RUnlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// decoded is an event's value decoded before the state is locked: JSON
// and placement expansion are the expensive part of applying a watch
// batch, and readers (every API request) must not wait for them.
type decoded struct {
	obj   any
	nodes []api.NodeGPUs // a running job's expanded placement
}

func (st *state) predecode(evs []store.Event) []decoded {
	out := make([]decoded, len(evs))
	for i, e := range evs {
		if e.Deleted {
			continue
		}
		rest, ok := strings.CutPrefix(e.KV.Key, store.Prefix)
		if !ok {
			continue
		}
		kind, _, _ := strings.Cut(rest, "/")
		switch kind {
		case "tenants":
			out[i].obj = decodeKV[api.Tenant](st, e.KV)
		case "tokens":
			out[i].obj = decodeKV[api.TokenInfo](st, e.KV)
		case "queues":
			out[i].obj = decodeKV[api.Queue](st, e.KV)
		case "nodes":
			out[i].obj = decodeKV[api.Node](st, e.KV)
		case "reports":
			out[i].obj = decodeKV[api.NodeReport](st, e.KV)
		case "jobs":
			j := decodeKV[api.Job](st, e.KV)
			out[i].obj = j
			if j != nil && j.Status.Phase == api.PhaseRunning && j.Status.Placement != nil {
				nodes, err := j.Status.Placement.Expand()
				if err != nil {
					st.log.Error("state: bad placement", "job", j.Metadata.ID, "err", err)
				}
				out[i].nodes = nodes
			}
		}
	}
	return out
}

func (st *state) apply(e store.Event, d decoded) {
	key := e.KV.Key
	rest, ok := strings.CutPrefix(key, store.Prefix)
	if !ok {
		return
	}
	kind, name, _ := strings.Cut(rest, "/")
	switch kind {
	case "tenants":
		if e.Deleted {
			delete(st.tenants, name)
		} else if t := as[api.Tenant](d); t != nil {
			t.Metadata.ResourceVersion = e.KV.ModRev
			st.tenants[name] = t
		}
	case "tokens":
		if e.Deleted {
			delete(st.tokens, name)
		} else if t := as[api.TokenInfo](d); t != nil {
			st.tokens[name] = &tokenRec{*t}
		}
	case "queues":
		if e.Deleted {
			delete(st.queues, name)
		} else if q := as[api.Queue](d); q != nil {
			q.Metadata.ResourceVersion = e.KV.ModRev
			st.queues[name] = q
		}
		st.dirtyQueues = true
	case "jobs":
		st.applyJob(name, e, d)
	case "nodes":
		old := st.nodes[name]
		var n *api.Node
		if e.Deleted {
			delete(st.nodes, name)
		} else if n = as[api.Node](d); n != nil {
			n.Metadata.ResourceVersion = e.KV.ModRev
			st.nodes[name] = &nodeRec{node: n, modRev: e.KV.ModRev}
		}
		// The fabric served by GET /v1/fabric changes when a node comes,
		// goes, or comes back with other hardware.
		if (old == nil) != (st.nodes[name] == nil) || old != nil && n != nil && !reflect.DeepEqual(old.node.Status.Inventory, n.Status.Inventory) {
			st.nodesGen++
		}
		st.dirtyNodes[name] = true
		if e.Deleted || n != nil {
			st.notifyNode(name, e.Deleted)
		}
		// The node's address is MASTER_ADDR for jobs with rank 0 there.
		st.signalNode(name)
	case "alive":
		_, was := st.alive[name]
		if e.Deleted {
			delete(st.alive, name)
		} else {
			st.alive[name] = e.KV.Lease
		}
		st.dirtyNodes[name] = true
		// The phase shown (Ready, Down) is the lease's: watchers must see
		// it move.
		if was == e.Deleted && st.nodes[name] != nil {
			st.notifyNode(name, false)
		}
	case "reports":
		job, node, _ := strings.Cut(name, "/")
		if e.Deleted {
			if m := st.reports[job]; m != nil {
				delete(m, node)
				if len(m) == 0 {
					delete(st.reports, job)
				}
			}
		} else if r := as[api.NodeReport](d); r != nil {
			m := st.reports[job]
			if m == nil {
				m = map[string]*api.NodeReport{}
				st.reports[job] = m
			}
			m[node] = r
		}
		st.dirtyJobs[job] = true
	case "bootstrap":
		st.boot = string(e.KV.Value)
	}
}

func as[T any](d decoded) *T {
	v, _ := d.obj.(*T)
	return v
}

func decodeKV[T any](st *state, kv store.KV) *T {
	var v T
	if err := json.Unmarshal(kv.Value, &v); err != nil {
		st.log.Error("state: undecodable object skipped", "key", kv.Key, "err", err)
		return nil
	}
	return &v
}

func (st *state) applyJob(id string, e store.Event, d decoded) {
	old := st.jobs[id]
	var rec *jobRec
	if e.Deleted {
		delete(st.jobs, id)
	} else if j := as[api.Job](d); j != nil {
		j.Metadata.ResourceVersion = e.KV.ModRev
		rec = &jobRec{job: j, modRev: e.KV.ModRev, nodes: d.nodes}
		st.jobs[id] = rec
	}
	// Keep the node -> jobs index, and wake the assignment streams of
	// every node the job left or joined.
	if old != nil {
		for _, n := range old.nodes {
			delete(st.onNode[n.Node], id)
			st.signalNode(n.Node)
		}
	}
	if rec != nil {
		for _, n := range rec.nodes {
			m := st.onNode[n.Node]
			if m == nil {
				m = map[string]bool{}
				st.onNode[n.Node] = m
			}
			m[id] = true
			st.signalNode(n.Node)
		}
	}
	st.dirtyJobs[id] = true
	st.notifyJob(id, old, rec, e.Deleted)
	st.notifyAllocation(old, rec)
}

// notifyAllocation tells node watchers of every node whose allocated GPUs
// moved because a job started, ended or moved. A job update that keeps its
// placement sends nothing.
func (st *state) notifyAllocation(old, rec *jobRec) {
	if st.nodeWatchers == 0 {
		return
	}
	var before, after []api.NodeGPUs
	if old != nil {
		before = old.nodes
	}
	if rec != nil {
		after = rec.nodes
	}
	if slices.Equal(before, after) {
		return
	}
	was := make(map[string]uint64, len(before))
	for _, n := range before {
		was[n.Node] |= n.GPUs
	}
	now := make(map[string]uint64, len(after))
	for _, n := range after {
		now[n.Node] |= n.GPUs
	}
	for name, g := range was {
		if now[name] != g && st.nodes[name] != nil {
			st.notifyNode(name, false)
		}
	}
	for name, g := range now {
		if _, ok := was[name]; !ok && g != 0 && st.nodes[name] != nil {
			st.notifyNode(name, false)
		}
	}
}

// Subscriptions.

func (st *state) subscribe(s *subscriber) {
	st.mu.Lock()
	st.subs[s] = true
	if s.kind == "nodes" {
		st.nodeWatchers++
	}
	st.mu.Unlock()
}

func (st *state) unsubscribe(s *subscriber) {
	st.mu.Lock()
	st.closeSub(s)
	st.mu.Unlock()
}

func (st *state) closeSub(s *subscriber) {
	if s.closed {
		return
	}
	s.closed = true
	delete(st.subs, s)
	if s.kind == "nodes" {
		st.nodeWatchers--
	}
	if s.events != nil {
		close(s.events)
	}
	if s.signal != nil {
		close(s.signal)
	}
}

func (st *state) send(s *subscriber, ev any) {
	select {
	case s.events <- ev:
	default:
		// A stream that cannot keep up is closed; its client lists
		// again. Slow readers must not hold the state.
		st.closeSub(s)
	}
}

func (st *state) notifyJob(id string, old, rec *jobRec, deleted bool) {
	if len(st.subs) == 0 {
		return
	}
	typ, obj := "MODIFIED", (*api.Job)(nil)
	switch {
	case deleted && old != nil:
		typ, obj = "DELETED", old.job
	case rec == nil:
		return
	case old == nil:
		typ, obj = "ADDED", rec.job
	default:
		obj = rec.job
	}
	for s := range st.subs {
		if s.kind == "jobs" && (s.tenant == "" || s.tenant == obj.Metadata.Tenant) {
			st.send(s, api.WatchEvent[*api.Job]{Type: typ, Object: obj})
		}
	}
}

// notifyNode sends watchers the node as the API shows it (phase from the
// lease, GPUs allocated from the running jobs). Caller holds mu.
func (st *state) notifyNode(name string, deleted bool) {
	if st.nodeWatchers == 0 {
		return
	}
	typ := "MODIFIED"
	var n *api.Node
	if deleted {
		typ, n = "DELETED", &api.Node{Metadata: api.ObjectMeta{Name: name}}
	} else if n = st.nodeView(name, nil); n == nil {
		return
	}
	for s := range st.subs {
		if s.kind == "nodes" {
			st.send(s, api.WatchEvent[*api.Node]{Type: typ, Object: n})
		}
	}
}

func (st *state) signalNode(node string) {
	if len(st.subs) == 0 {
		return
	}
	for s := range st.subs {
		if s.kind == "assign" && s.node == node {
			select {
			case s.signal <- struct{}{}:
			default:
			}
		}
	}
}

// assignments computes the desired state of a node at now, and when it
// changes by the clock alone (a restart backoff ends; zero: never).
// Caller holds mu.
func (st *state) assignments(node string, now time.Time) (set api.AssignmentSet, wake time.Time) {
	set = api.AssignmentSet{Node: node, ResourceVersion: st.rev, Assignments: []api.Assignment{}}
	ids := make([]string, 0, len(st.onNode[node]))
	for id := range st.onNode[node] {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	for _, id := range ids {
		rec := st.jobs[id]
		if rec == nil || rec.job.Status.Phase != api.PhaseRunning || len(rec.nodes) == 0 {
			continue
		}
		if at := rec.job.Status.RestartAt; at.After(now) {
			if wake.IsZero() || at.Before(wake) {
				wake = at
			}
			continue // backing off: the old ranks stop, the new wait
		}
		rec.once.Do(func() {
			master := ""
			if n := st.nodes[rec.nodes[0].Node]; n != nil {
				master = n.node.Status.Address
			}
			rec.assign = api.BuildAssignments(rec.job, rec.nodes, master)
			// One hosts list, shared by every node's assignment.
			hosts := make([]api.AssignmentHost, len(rec.nodes))
			for i, ng := range rec.nodes {
				h := api.AssignmentHost{Node: ng.Node, Address: ng.Node, Slots: bits.OnesCount64(ng.GPUs)}
				if n := st.nodes[ng.Node]; n != nil && n.node.Status.Address != "" {
					h.Address = n.node.Status.Address
				}
				hosts[i] = h
			}
			for i := range rec.assign {
				rec.assign[i].Hosts = hosts
			}
			rec.index = make(map[string]int, len(rec.nodes))
			for i, n := range rec.nodes {
				rec.index[n.Node] = i
			}
		})
		if i, ok := rec.index[node]; ok {
			set.Assignments = append(set.Assignments, rec.assign[i])
		}
	}
	return set, wake
}
