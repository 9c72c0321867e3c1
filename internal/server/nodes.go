package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
	"net/http"
	"sort"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"gpucloud/internal/api"
	"gpucloud/internal/store"
)

// nodeView is a node as the API shows it: the phase comes from the lease
// (live now), the allocation from the running jobs (alloc, from
// allocated(), or nil to count this node alone). Caller holds st.mu.
func (st *state) nodeView(name string, alloc map[string]int) *api.Node {
	rec := st.nodes[name]
	if rec == nil {
		return nil
	}
	n := *rec.node
	if _, ok := st.alive[name]; ok {
		n.Status.Phase = api.NodeReady
	} else {
		n.Status.Phase = api.NodeDown
	}
	n.Status.GPUsAllocated = 0
	if alloc != nil {
		n.Status.GPUsAllocated = alloc[name]
		return &n
	}
	for id := range st.onNode[name] {
		if j := st.jobs[id]; j != nil {
			for _, ng := range j.nodes {
				if ng.Node == name {
					n.Status.GPUsAllocated += bits.OnesCount64(ng.GPUs)
				}
			}
		}
	}
	return &n
}

// allocated counts allocated GPUs per node over all running jobs.
func (st *state) allocated() map[string]int {
	out := make(map[string]int, len(st.nodes))
	for _, j := range st.jobs {
		for _, ng := range j.nodes {
			out[ng.Node] += bits.OnesCount64(ng.GPUs)
		}
	}
	return out
}

func (s *Server) listNodes(w http.ResponseWriter, r *http.Request) error {
	if err := s.caughtUp(r.Context()); err != nil {
		return err
	}
	s.st.mu.RLock()
	out := api.List[api.Node]{Items: make([]api.Node, 0, len(s.st.nodes)), ResourceVersion: s.st.rev}
	alloc := s.st.allocated()
	for name := range s.st.nodes {
		out.Items = append(out.Items, *s.st.nodeView(name, alloc))
	}
	s.st.mu.RUnlock()
	sort.Slice(out.Items, func(i, j int) bool { return out.Items[i].Metadata.Name < out.Items[j].Metadata.Name })
	return writeJSON(w, 200, out)
}

func (s *Server) getNode(w http.ResponseWriter, r *http.Request) error {
	if err := s.caughtUp(r.Context()); err != nil {
		return err
	}
	s.st.mu.RLock()
	n := s.st.nodeView(r.PathValue("name"), nil)
	s.st.mu.RUnlock()
	if n == nil {
		return errNotFound("node " + r.PathValue("name"))
	}
	return writeJSON(w, 200, n)
}

// updateNode applies f to the stored node with compare-and-swap, retrying
// on conflicts.
func (s *Server) updateNode(r *http.Request, name string, f func(n *api.Node) error, ev *api.Event) (*api.Node, error) {
	for attempt := 0; attempt < 10; attempt++ {
		kv, err := s.store.Get(r.Context(), store.NodesKey+name)
		if errors.Is(err, store.ErrNotFound) {
			return nil, errNotFound("node " + name)
		}
		if err != nil {
			return nil, err
		}
		var n api.Node
		if err := json.Unmarshal(kv.Value, &n); err != nil {
			return nil, err
		}
		if err := f(&n); err != nil {
			return nil, err
		}
		var extra []clientv3.Op
		if ev != nil {
			extra = append(extra, eventOp(*ev))
		}
		n.Metadata.ResourceVersion = 0
		rev, err := s.store.CAS(r.Context(), store.NodesKey+name, mustJSON(&n), kv.ModRev, extra...)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return nil, err
		}
		s.wrote(rev)
		n.Metadata.ResourceVersion = rev
		return &n, nil
	}
	return nil, errConflict("node %s kept changing; retry", name)
}

func (s *Server) nodeAction(action string) func(w http.ResponseWriter, r *http.Request) error {
	return func(w http.ResponseWriter, r *http.Request) error {
		name := r.PathValue("name")
		reason := r.URL.Query().Get("reason")
		n, err := s.updateNode(r, name, func(n *api.Node) error {
			switch action {
			case "cordon":
				n.Spec.Cordoned = true
			case "uncordon":
				n.Spec.Cordoned, n.Spec.Draining = false, false
			case "drain":
				n.Spec.Cordoned, n.Spec.Draining = true, true
			}
			n.Status.Reason = reason
			return nil
		}, &api.Event{Reason: "Node" + action, Kind: api.KindNode, Name: name, Message: reason})
		if err != nil {
			return err
		}
		return writeJSON(w, 200, n)
	}
}

func (s *Server) deleteNode(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	if err := s.caughtUp(r.Context()); err != nil {
		return err
	}
	s.st.mu.RLock()
	_, exists := s.st.nodes[name]
	busy := len(s.st.onNode[name])
	s.st.mu.RUnlock()
	if !exists {
		return errNotFound("node " + name)
	}
	if busy > 0 {
		return errConflict("node %s runs %d jobs: drain it first", name, busy)
	}
	rev, err := s.store.Txn(r.Context(), nil, []clientv3.Op{clientv3.OpDelete(store.NodesKey + name), clientv3.OpDelete(store.AliveKey + name)})
	if err != nil {
		return err
	}
	s.wrote(rev)
	return writeJSON(w, 200, api.Status{Message: "node " + name + " deleted"})
}

// The agent protocol.

func (s *Server) register(w http.ResponseWriter, r *http.Request) error {
	var reg api.NodeRegistration
	if err := decodeBody(r, &reg); err != nil {
		return err
	}
	if err := api.ValidateRegistration(&reg); err != nil {
		return err
	}
	if err := principalOf(r).forNode(reg.Name); err != nil {
		return err
	}
	ttl := int64(s.cfg.NodeLeaseTTL / time.Second)
	lease, err := s.grant(r, ttl)
	if err != nil {
		return err
	}
	resp := api.Registration{Node: reg.Name, LeaseTTLSeconds: int(ttl), HeartbeatIntervalSeconds: int(s.cfg.HeartbeatInterval / time.Second)}
	leaf, inFabric := s.fabricLeaf(reg.Name)
	resp.InFabric, resp.Leaf = inFabric, leaf
	if inFabric && reg.Place.Leaf != "" && reg.Place.Leaf != leaf {
		resp.Warnings = append(resp.Warnings, fmt.Sprintf("agent says leaf %s, the fabric says %s: the fabric wins", reg.Place.Leaf, leaf))
	}
	if inFabric {
		if want := s.cfg.Fabric.NodeGPUs(s.fabricNode(reg.Name)); want != len(reg.Inventory.GPUs) {
			resp.Warnings = append(resp.Warnings, fmt.Sprintf("the fabric gives this node %d GPUs, the agent found %d", want, len(reg.Inventory.GPUs)))
		}
	}
	now := time.Now().UTC()
	for attempt := 0; attempt < 10; attempt++ {
		var n api.Node
		var modRev int64
		kv, err := s.store.Get(r.Context(), store.NodesKey+reg.Name)
		switch {
		case err == nil:
			if err := json.Unmarshal(kv.Value, &n); err != nil {
				return err
			}
			modRev = kv.ModRev
		case errors.Is(err, store.ErrNotFound):
			n = api.Node{APIVersion: api.Version, Kind: api.KindNode, Metadata: api.ObjectMeta{Name: reg.Name, CreatedAt: now}}
		default:
			return err
		}
		// The spec (cordon, drain) is the administrator's and survives
		// re-registration.
		n.Status = api.NodeStatus{Phase: api.NodeReady, Address: reg.Address, Inventory: reg.Inventory, Leaf: leaf, InFabric: inFabric,
			GPUs: len(reg.Inventory.GPUs), AgentVersion: reg.AgentVersion, RegisteredAt: now, Reason: n.Status.Reason}
		n.Metadata.Labels = reg.Labels // the agent's: what it says now
		if len(n.Metadata.Labels) == 0 {
			n.Metadata.Labels = nil
		}
		n.Metadata.ResourceVersion = 0
		rev, err := s.store.Txn(r.Context(),
			[]clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(store.NodesKey+reg.Name), "=", modRev)},
			[]clientv3.Op{opPut(store.NodesKey+reg.Name, mustJSON(&n)),
				opPut(store.AliveKey+reg.Name, []byte(now.Format(time.RFC3339)), clientv3.WithLease(clientv3.LeaseID(lease))),
				eventOp(api.Event{Time: now, Reason: "Registered", Kind: api.KindNode, Name: reg.Name,
					Message: fmt.Sprintf("%d GPUs, %d HCAs, leaf %s", len(reg.Inventory.GPUs), len(reg.Inventory.HCAs), leaf)})})
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return err
		}
		s.wrote(rev)
		return writeJSON(w, 200, resp)
	}
	return errConflict("node %s kept changing; retry", reg.Name)
}

func (s *Server) grant(r *http.Request, ttl int64) (int64, error) {
	var id int64
	err := s.storeRetry(r, func(cli *clientv3.Client, ctx contextT) error {
		l, err := cli.Grant(ctx, ttl)
		if err == nil {
			id = int64(l.ID)
		}
		return err
	})
	return id, err
}

func (s *Server) heartbeat(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	var hb api.Heartbeat
	b, err := readBody(r)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(b)) > 0 { // an empty heartbeat is allowed
		if err := api.Decode(b, &hb); err != nil {
			return err
		}
	}
	s.st.mu.RLock()
	lease, ok := s.st.alive[name]
	s.st.mu.RUnlock()
	if !ok {
		// The state may lag a registration made a moment ago elsewhere.
		kv, err := s.store.Get(r.Context(), store.AliveKey+name)
		if err != nil {
			return &httpError{code: http.StatusGone, msg: "node " + name + " has no lease: register again"}
		}
		lease = kv.Lease
	}
	if !s.renew.note(name, lease) {
		return &httpError{code: http.StatusGone, msg: "node " + name + " lease expired: register again"}
	}
	s.metrics.heartbeats.Inc()
	if err := s.reconcileHeartbeat(r, name, &hb); err != nil {
		return err
	}
	return writeJSON(w, 200, api.HeartbeatResponse{LeaseTTLSeconds: int(s.cfg.NodeLeaseTTL / time.Second)})
}

// reconcileHeartbeat compares what the agent runs with what it should:
// ranks that had started, have not exited and are no longer running (the
// agent restarted and lost them) are reported as failed, so the job
// restarts rather than waiting forever. A rank must have been recorded as
// started a heartbeat interval ago, so a heartbeat composed before the
// start (or sent between an exit and its report) is not mistaken for a
// loss. It also records GPU health.
func (s *Server) reconcileHeartbeat(r *http.Request, name string, hb *api.Heartbeat) error {
	running := map[string]int{}
	for _, rj := range hb.Running {
		running[rj.Job] = rj.Generation
	}
	var lost []api.RankEvent
	s.st.mu.RLock()
	for id := range s.st.onNode[name] {
		rec := s.st.jobs[id]
		if rec == nil || rec.job.Status.Phase != api.PhaseRunning {
			continue
		}
		gen := rec.job.Status.Generation
		if g, ok := running[id]; ok && g == gen {
			continue
		}
		rep := s.st.reports[id][name]
		if rep == nil || rep.Generation != gen {
			continue
		}
		for rank, rr := range rep.Ranks {
			if rr.Started && !rr.Exited && time.Since(rr.StartedAt) > s.cfg.HeartbeatInterval {
				lost = append(lost, api.RankEvent{Job: id, Generation: gen, Rank: rank, Event: api.RankExited, ExitCode: -1,
					Reason: "lost: the agent reports no live ranks of this generation"})
			}
		}
	}
	var unhealthyChanged bool
	if rec := s.st.nodes[name]; rec != nil {
		unhealthyChanged = fmt.Sprint(rec.node.Status.Unhealthy) != fmt.Sprint(hb.Unhealthy)
	}
	s.st.mu.RUnlock()
	if len(lost) > 0 {
		if err := s.applyReports(r, name, lost); err != nil {
			return err
		}
	}
	if unhealthyChanged {
		_, err := s.updateNode(r, name, func(n *api.Node) error {
			n.Status.Unhealthy = hb.Unhealthy
			return nil
		}, &api.Event{Type: "Warning", Reason: "GPUHealth", Kind: api.KindNode, Name: name, Message: fmt.Sprintf("unhealthy GPUs: %v", hb.Unhealthy)})
		return err
	}
	return nil
}

func (s *Server) reports(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("name")
	var rr api.RankReports
	if err := decodeBody(r, &rr); err != nil {
		return err
	}
	if err := s.applyReports(r, name, rr.Reports); err != nil {
		return err
	}
	return writeJSON(w, 200, api.Status{Message: fmt.Sprintf("%d reports recorded", len(rr.Reports))})
}

// applyReports merges rank events into the node's report of each job's
// current generation. Only the node's own agent writes that key, so
// conflicts are rare; reports of older generations are dropped.
func (s *Server) applyReports(r *http.Request, node string, evs []api.RankEvent) error {
	byJob := map[string][]api.RankEvent{}
	for i, e := range evs {
		switch e.Event {
		case api.RankStarted, api.RankExited, api.RankCheckpoint:
		default:
			return fieldErr(fmt.Sprintf("reports[%d].event", i), "must be started, exited or checkpoint")
		}
		byJob[e.Job] = append(byJob[e.Job], e)
	}
	for job, jevs := range byJob {
		look := func() (*jobRec, int, bool) {
			s.st.mu.RLock()
			defer s.st.mu.RUnlock()
			rec := s.st.jobs[job]
			if rec == nil {
				return nil, 0, false
			}
			return rec, rec.job.Status.Generation, s.st.onNode[node][job]
		}
		rec, gen, onNode := look()
		if rec == nil || !onNode || jevs[0].Generation > gen {
			// The agent may have its assignment from a replica ahead of
			// this one: catch up before dropping a report.
			if err := s.fresh(r.Context()); err != nil {
				return err
			}
			rec, gen, onNode = look()
		}
		if rec == nil || !onNode {
			continue // not (or no longer) this node's: the assignment stream will tell the agent
		}
		key := store.ReportsKey + job + "/" + node
		for attempt := 0; ; attempt++ {
			var rep api.NodeReport
			var modRev int64
			kv, err := s.store.Get(r.Context(), key)
			switch {
			case err == nil:
				if err := json.Unmarshal(kv.Value, &rep); err != nil {
					return err
				}
				modRev = kv.ModRev
			case errors.Is(err, store.ErrNotFound):
			default:
				return err
			}
			if rep.Generation != gen {
				rep = api.NodeReport{Node: node, Generation: gen}
			}
			if rep.Ranks == nil {
				rep.Ranks = map[int]api.RankRec{}
			}
			changed := false
			for _, e := range jevs {
				if e.Generation != gen {
					continue
				}
				rr := rep.Ranks[e.Rank]
				old := rr
				switch e.Event {
				case api.RankStarted:
					if !rr.Started {
						rr.Started, rr.StartedAt = true, time.Now().UTC()
					}
				case api.RankExited:
					if !rr.Started {
						rr.StartedAt = time.Now().UTC()
					}
					rr.Started, rr.Exited, rr.ExitCode, rr.Reason = true, true, e.ExitCode, e.Reason
				case api.RankCheckpoint:
					rr.Checkpoints++
				}
				if rr != old {
					rep.Ranks[e.Rank] = rr
					changed = true
				}
			}
			if !changed {
				break
			}
			rev, err := s.store.CAS(r.Context(), key, mustJSON(&rep), modRev)
			if errors.Is(err, store.ErrConflict) && attempt < 10 {
				continue
			}
			if err != nil {
				return err
			}
			s.wrote(rev)
			break
		}
	}
	return nil
}

func (s *Server) uploadLog(w http.ResponseWriter, r *http.Request) error {
	var c api.LogChunk
	if err := decodeBody(r, &c); err != nil {
		return err
	}
	if c.Job == "" || c.Rank < 0 || c.Offset < 0 {
		return errBad("job, rank and offset are required")
	}
	look := func() (*jobRec, bool) {
		s.st.mu.RLock()
		defer s.st.mu.RUnlock()
		rec := s.st.jobs[c.Job]
		return rec, rec != nil && s.st.onNode[r.PathValue("name")][c.Job]
	}
	rec, ok := look()
	if !ok {
		if err := s.fresh(r.Context()); err != nil {
			return err
		}
		rec, ok = look()
	}
	if rec == nil {
		return errNotFound("job " + c.Job)
	}
	if !ok && rec.job.Status.Phase == api.PhaseRunning {
		return errForbidden("job " + c.Job + " does not run on node " + r.PathValue("name"))
	}
	// One key per chunk; a resent chunk overwrites itself.
	key := fmt.Sprintf("%s%s/%06d/%06d-%016x", store.LogsKey, c.Job, c.Rank, c.Generation, c.Offset)
	if _, err := s.store.Put(r.Context(), key, c.Data); err != nil {
		return err
	}
	return writeJSON(w, 200, api.Status{Message: "ok"})
}
