package schedbench

import (
	"fmt"
	"math/rand/v2"
	"time"

	"gpucloud/internal/sched"
	"gpucloud/internal/topology"
)

// sizeClass is a kind of job in the mix, by share of job count.
type sizeClass struct {
	name     string
	weight   float64
	gpr      int // GPUs per replica (8: whole nodes)
	minNodes int // for whole-node gangs: replicas drawn log-uniformly
	maxNodes int // between min and max
}

// The mix. Jobs of up to one node follow the shape of the Microsoft Philly
// trace (msr-fiddle/philly-traces, CC-BY-4.0; counts from the derived job
// list petuum/adaptdl simulator/traces/philly.csv, Apache-2.0, copied in
// ../shared/traces/philly): most jobs use one GPU. Philly's largest jobs
// were 128 GPUs; a cloud for foundation models adds gangs of hundreds of
// nodes that hold most of the GPUs, so the tail here is heavier.
var mix = []sizeClass{
	{"1gpu", 0.50, 1, 0, 0},
	{"2gpu", 0.08, 2, 0, 0},
	{"4gpu", 0.10, 4, 0, 0},
	{"node", 0.17, 8, 1, 1},
	{"small-gang", 0.10, 8, 2, 8},
	{"gang", 0.04, 8, 16, 64},
	{"large-gang", 0.01, 8, 128, 512},
}

type mixer struct {
	r      *rand.Rand
	gpn    int // GPUs per node
	next   int
	tenant int
}

func newMixer(seed uint64, gpn int) *mixer {
	return &mixer{r: rand.New(rand.NewPCG(seed, 0x5eed)), gpn: gpn}
}

// job draws the next job of the mix, submitted at now.
func (m *mixer) job(now time.Time) sched.Job {
	x := m.r.Float64()
	c := mix[len(mix)-1]
	for _, k := range mix {
		if x < k.weight {
			c = k
			break
		}
		x -= k.weight
	}
	return m.of(c, now)
}

func (m *mixer) of(c sizeClass, now time.Time) sched.Job {
	m.next++
	j := sched.Job{
		ID:             fmt.Sprintf("%s-%d", c.name, m.next),
		Tenant:         fmt.Sprintf("tenant-%d", m.r.IntN(8)),
		Replicas:       1,
		GPUsPerReplica: min(c.gpr, m.gpn),
		Preemptible:    m.r.IntN(5) > 0,
		Submitted:      now,
	}
	if c.maxNodes > 0 {
		j.GPUsPerReplica = m.gpn
		j.Replicas = c.minNodes
		if c.maxNodes > c.minNodes {
			// log-uniform, in powers of two as training jobs are sized
			lo, hi := log2(c.minNodes), log2(c.maxNodes)
			j.Replicas = 1 << (lo + m.r.IntN(hi-lo+1))
		}
		j.TPSize = m.gpn
	}
	if m.r.IntN(10) < 7 {
		j.Runtime = time.Duration(10+m.r.IntN(24*60)) * time.Minute
	}
	if j.Replicas >= 4 {
		j.CheckpointInterval = 30 * time.Minute
		if m.r.IntN(10) == 0 {
			j.MinReplicas = j.Replicas / 2
		}
		if m.r.IntN(4) == 0 {
			j.Preferred = topology.LevelBlock
		}
	}
	return j
}

func log2(n int) int {
	k := 0
	for n > 1 {
		n >>= 1
		k++
	}
	return k
}
