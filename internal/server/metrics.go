package server

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"gpucloud/internal/api"
)

// metrics are per server (a registry of its own, so tests can run several
// replicas in one process).
type metrics struct {
	reg          *prometheus.Registry
	apiLatency   *prometheus.HistogramVec
	queueDelay   prometheus.Histogram
	cycle        prometheus.Histogram
	submitted    prometheus.Counter
	heartbeats   prometheus.Counter
	decisions    *prometheus.CounterVec
	resyncs      prometheus.Counter
	txnConflicts prometheus.Counter
}

func newMetrics(s *Server) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		apiLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "gpucloud_api_request_duration_seconds", Help: "API latency by route and status code.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"route", "code"}),
		queueDelay: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "gpucloud_job_queueing_delay_seconds", Help: "Time from submission to placement.",
			Buckets: prometheus.ExponentialBuckets(0.01, 4, 12),
		}),
		cycle: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "gpucloud_scheduling_cycle_seconds", Help: "Duration of one scheduling cycle, writes included.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 3, 12),
		}),
		submitted:    prometheus.NewCounter(prometheus.CounterOpts{Name: "gpucloud_jobs_submitted_total", Help: "Jobs accepted by this replica."}),
		heartbeats:   prometheus.NewCounter(prometheus.CounterOpts{Name: "gpucloud_node_heartbeats_total", Help: "Heartbeats served by this replica."}),
		decisions:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "gpucloud_scheduler_decisions_total", Help: "Scheduler decisions written, by kind."}, []string{"kind"}),
		resyncs:      prometheus.NewCounter(prometheus.CounterOpts{Name: "gpucloud_scheduler_resyncs_total", Help: "Rebuilds of the scheduler from etcd (leadership, fabric change, write conflict)."}),
		txnConflicts: prometheus.NewCounter(prometheus.CounterOpts{Name: "gpucloud_scheduler_txn_conflicts_total", Help: "Leader transactions that lost a compare."}),
	}
	m.reg.MustRegister(m.apiLatency, m.queueDelay, m.cycle, m.submitted, m.heartbeats, m.decisions, m.resyncs, m.txnConflicts,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), &stateCollector{s})
	return m
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// stateCollector reads gauges from the state at scrape time.
type stateCollector struct{ s *Server }

var (
	descJobs   = prometheus.NewDesc("gpucloud_jobs", "Jobs by phase.", []string{"phase"}, nil)
	descGPUs   = prometheus.NewDesc("gpucloud_gpus", "GPUs of registered nodes by state (allocated, free, down).", []string{"state"}, nil)
	descNodes  = prometheus.NewDesc("gpucloud_nodes", "Nodes by phase.", []string{"phase"}, nil)
	descLeader = prometheus.NewDesc("gpucloud_leader", "1 when this replica runs the scheduler.", nil, nil)
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descJobs
	ch <- descGPUs
	ch <- descNodes
	ch <- descLeader
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.s.st
	st.mu.RLock()
	phases := map[api.Phase]int{api.PhasePending: 0, api.PhaseRunning: 0, api.PhaseSucceeded: 0, api.PhaseFailed: 0, api.PhaseCancelled: 0}
	for _, j := range st.jobs {
		phases[j.job.Status.Phase]++
	}
	var alloc, free, down, up, nodesDown int
	all := st.allocated()
	for name := range st.nodes {
		n := st.nodeView(name, all)
		if n.Status.Phase == api.NodeReady {
			up++
			alloc += n.Status.GPUsAllocated
			free += n.Status.GPUs - n.Status.GPUsAllocated
		} else {
			nodesDown++
			down += n.Status.GPUs
		}
	}
	st.mu.RUnlock()
	for p, n := range phases {
		ch <- prometheus.MustNewConstMetric(descJobs, prometheus.GaugeValue, float64(n), string(p))
	}
	ch <- prometheus.MustNewConstMetric(descGPUs, prometheus.GaugeValue, float64(alloc), "allocated")
	ch <- prometheus.MustNewConstMetric(descGPUs, prometheus.GaugeValue, float64(free), "free")
	ch <- prometheus.MustNewConstMetric(descGPUs, prometheus.GaugeValue, float64(down), "down")
	ch <- prometheus.MustNewConstMetric(descNodes, prometheus.GaugeValue, float64(up), "Ready")
	ch <- prometheus.MustNewConstMetric(descNodes, prometheus.GaugeValue, float64(nodesDown), "Down")
	l := 0.0
	if c.s.IsLeader() {
		l = 1
	}
	ch <- prometheus.MustNewConstMetric(descLeader, prometheus.GaugeValue, l)
}
