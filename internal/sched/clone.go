package sched

import "maps"

// Clone returns an independent copy of the scheduler, for what-if runs and
// benchmarks: the same calls on both give the same decisions.
func (s *Scheduler) Clone() *Scheduler {
	c := &Scheduler{
		cfg:      s.cfg,
		prof:     s.prof,
		t:        s.t,
		v:        s.v.clone(),
		pl:       newPlacer(s.t, s.cfg.Spread),
		qt:       &queueTree{byName: map[string]*queue{}},
		jobs:     make(map[string]*job, len(s.jobs)),
		nodeJobs: make([][]*job, len(s.nodeJobs)),
		out:      append([]uint8(nil), s.out...),
		shrunk:   map[*job]struct{}{},
		rejects:  append([]Decision(nil), s.rejects...),
		now:      s.now,

		shapeIDs: maps.Clone(s.shapeIDs),
		cycleNo:  s.cycleNo,
		unseen:   s.unseen,
	}
	qmap := map[*queue]*queue{}
	for _, q := range s.qt.all {
		n := &queue{spec: q.spec, guaranteed: q.guaranteed, limit: q.limit, weight: q.weight, cur: q.cur,
			curM: append([]int64(nil), q.curM...), dec: append([]float64(nil), q.dec...), restored: q.restored, whole: q.whole, npend: q.npend}
		if q.tenantBy != nil {
			n.tenantBy = map[string]*tenant{}
			for _, t := range q.tenants {
				nt := &tenant{name: t.name, q: n, cur: t.cur, curM: append([]int64(nil), t.curM...), dec: append([]float64(nil), t.dec...),
					pend: newPendIndex()}
				n.tenants = append(n.tenants, nt)
				n.tenantBy[t.name] = nt
			}
		}
		qmap[q] = n
		c.qt.byName[q.spec.Name] = n
		c.qt.all = append(c.qt.all, n)
	}
	for _, q := range s.qt.all {
		n := qmap[q]
		n.parent = qmap[q.parent]
		for _, ch := range q.children {
			n.children = append(n.children, qmap[ch])
		}
	}
	for _, q := range s.qt.roots {
		c.qt.roots = append(c.qt.roots, qmap[q])
	}
	jmap := make(map[*job]*job, len(s.jobs))
	for id, j := range s.jobs {
		n := *j
		n.leaf = qmap[j.leaf]
		n.ten = n.leaf.tenantBy[j.ten.name]
		jmap[j] = &n
		c.jobs[id] = &n
	}
	for _, j := range s.pend {
		c.pend = append(c.pend, jmap[j])
	}
	mapJob := func(j *job) *job { return jmap[j] }
	c.pendIdx = s.pendIdx.cloneMapped(mapJob)
	for _, q := range s.qt.all {
		for _, t := range q.tenants {
			qmap[q].tenantBy[t.name].pend = t.pend.cloneMapped(mapJob)
		}
	}
	for _, j := range s.run {
		c.run = append(c.run, jmap[j])
	}
	c.ends = s.ends.cloneMapped(func(j *job) *job { return jmap[j] })
	for _, q := range s.qt.all {
		for _, j := range q.running {
			qmap[q].running = append(qmap[q].running, jmap[j])
		}
	}
	for n, js := range s.nodeJobs {
		if len(js) > 0 {
			l := make([]*job, len(js))
			for i, j := range js {
				l[i] = jmap[j]
			}
			c.nodeJobs[n] = l
		}
	}
	for j := range s.shrunk {
		c.shrunk[jmap[j]] = struct{}{}
	}
	if r := s.res; r != nil {
		c.res = &standing{at: r.at, head: jmap[r.head], t: r.t, inf: r.inf, shadow: r.shadow}
		for _, x := range r.none {
			c.res.none = append(c.res.none, noneAt{jmap[x.j], x.at})
		}
		if s.v.mirror != nil {
			c.v.mirror = s.v.mirror.clone()
			c.v.hold = append([]uint64(nil), s.v.hold...)
		}
	}
	return c
}
