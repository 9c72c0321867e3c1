package router

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Response classes of the requests counter: what the client got. "error"
// is a request the router could not complete (no replica in time, every
// attempt failed, a replica died mid-response); "canceled" one the client
// gave up.
var classes = [...]string{"1xx", "2xx", "3xx", "4xx", "5xx", "error", "canceled"}

const (
	classError    = 5
	classCanceled = 6
)

// metrics are the router's, per deployment. The router is a
// prometheus.Collector: the server registers it in its registry.
type metrics struct {
	requests  *prometheus.CounterVec
	duration  *prometheus.HistogramVec
	queueWait *prometheus.HistogramVec
	retries   *prometheus.CounterVec
}

// poolMetrics are one deployment's children, looked up once so a request
// costs no label hashing.
type poolMetrics struct {
	requests  [len(classes)]prometheus.Counter
	duration  prometheus.Observer
	queueWait prometheus.Observer
	retries   prometheus.Counter
}

func newMetrics() *metrics {
	return &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gpucloud_serving_requests_total",
			Help: "Requests through the router by deployment and what the client got (1xx-5xx from a replica; error: the router failed it; canceled: the client left).",
		}, []string{"deployment", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "gpucloud_serving_request_duration_seconds",
			Help: "Time from a request's arrival at the router to the end of its response (streams included), by deployment.",
			// From a cached answer to a long generation.
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}, []string{"deployment"}),
		queueWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "gpucloud_serving_queue_wait_seconds",
			Help:    "Time requests waited in the router for a replica, by deployment (only requests that waited).",
			Buckets: []float64{.001, .005, .01, .05, .1, .5, 1, 5, 10, 30},
		}, []string{"deployment"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gpucloud_serving_retries_total",
			Help: "Requests sent again after a replica failed before answering, by deployment.",
		}, []string{"deployment"}),
	}
}

func (m *metrics) forPool(name string) *poolMetrics {
	pm := &poolMetrics{
		duration:  m.duration.WithLabelValues(name),
		queueWait: m.queueWait.WithLabelValues(name),
		retries:   m.retries.WithLabelValues(name),
	}
	for i, c := range classes {
		pm.requests[i] = m.requests.WithLabelValues(name, c)
	}
	return pm
}

func (m *metrics) remove(name string) {
	for _, c := range classes {
		m.requests.DeleteLabelValues(name, c)
	}
	m.duration.DeleteLabelValues(name)
	m.queueWait.DeleteLabelValues(name)
	m.retries.DeleteLabelValues(name)
}

var (
	descInflight = prometheus.NewDesc("gpucloud_serving_inflight_requests", "Requests at replicas now, by deployment.", []string{"deployment"}, nil)
	descQueued   = prometheus.NewDesc("gpucloud_serving_queued_requests", "Requests waiting in the router for a replica, by deployment.", []string{"deployment"}, nil)
	descReplicas = prometheus.NewDesc("gpucloud_serving_replicas", "Replicas known to the router by deployment and state (ready, unready, draining).", []string{"deployment", "state"}, nil)
)

// Describe implements prometheus.Collector.
func (rt *Router) Describe(ch chan<- *prometheus.Desc) {
	rt.metrics.requests.Describe(ch)
	rt.metrics.duration.Describe(ch)
	rt.metrics.queueWait.Describe(ch)
	rt.metrics.retries.Describe(ch)
	ch <- descInflight
	ch <- descQueued
	ch <- descReplicas
}

// Collect implements prometheus.Collector.
func (rt *Router) Collect(ch chan<- prometheus.Metric) {
	rt.metrics.requests.Collect(ch)
	rt.metrics.duration.Collect(ch)
	rt.metrics.queueWait.Collect(ch)
	rt.metrics.retries.Collect(ch)
	for name, p := range *rt.pools.Load() {
		p.mu.Lock()
		inflight, queued := p.inflight, p.queued
		var ready, unready, draining int
		for _, e := range p.eps {
			switch {
			case e.draining:
				draining++
			case e.healthy && !e.ejected:
				ready++
			default:
				unready++
			}
		}
		p.mu.Unlock()
		ch <- prometheus.MustNewConstMetric(descInflight, prometheus.GaugeValue, float64(inflight), name)
		ch <- prometheus.MustNewConstMetric(descQueued, prometheus.GaugeValue, float64(queued), name)
		ch <- prometheus.MustNewConstMetric(descReplicas, prometheus.GaugeValue, float64(ready), name, "ready")
		ch <- prometheus.MustNewConstMetric(descReplicas, prometheus.GaugeValue, float64(unready), name, "unready")
		ch <- prometheus.MustNewConstMetric(descReplicas, prometheus.GaugeValue, float64(draining), name, "draining")
	}
}
