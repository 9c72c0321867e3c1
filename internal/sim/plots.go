package sim

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"

	"gpucloud/internal/sim/plot"
)

// Plot file names written by WritePlots.
const (
	PlotUtilization = "utilization.svg"
	PlotQueue       = "queue.svg"
	PlotJCTCDF      = "jct_cdf.svg"
)

// WritePlots draws the runs into dir (created if needed): utilisation and
// queue length over time, and the CDF of job completion times, one line
// per run. It returns the files written.
func WritePlots(dir string, rs []*Result) ([]string, error) {
	if len(rs) == 0 {
		return nil, fmt.Errorf("nothing to plot")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	// Time axes in hours, or days for runs longer than three days.
	unit, unitName := 3600.0, "hours"
	for _, r := range rs {
		if r.SimulatedH > 72 {
			unit, unitName = 86400, "days"
		}
	}
	var util, queue []plot.Line
	var cdf []plot.Dist
	for _, r := range rs {
		name := runName(r, rs)
		util = append(util, seriesLine(name, r.Utilisation, unit, 100))
		queue = append(queue, seriesLine(name, r.QueueLength, unit, 1))
		cdf = append(cdf, plot.Dist{Name: name, Sorted: r.JCTs})
	}
	title := fmt.Sprintf("%s on %s", rs[0].Workload, rs[0].Fabric)
	if len(rs) > 1 && rs[0].Fabric != rs[len(rs)-1].Fabric {
		title = rs[0].Workload
	}
	title = filepath.Base(title)
	figs := []struct {
		file string
		draw func(*bytes.Buffer) error
	}{
		{PlotUtilization, func(b *bytes.Buffer) error {
			return plot.Lines(b, "GPU utilisation: "+title, "time ("+unitName+")", "allocated GPUs (% of fleet)", util)
		}},
		{PlotQueue, func(b *bytes.Buffer) error {
			return plot.Lines(b, "Queue length: "+title, "time ("+unitName+")", "jobs waiting", queue)
		}},
		{PlotJCTCDF, func(b *bytes.Buffer) error {
			return plot.CDF(b, "Job completion time: "+title, "job completion time (log scale)", cdf)
		}},
	}
	var files []string
	for _, f := range figs {
		var b bytes.Buffer
		if err := f.draw(&b); err != nil {
			return files, err
		}
		path := filepath.Join(dir, f.file)
		if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
			return files, err
		}
		files = append(files, path)
	}
	return files, nil
}

// runName labels a run in a legend: the policy, with the fleet size when
// the runs differ in it.
func runName(r *Result, all []*Result) string {
	for _, o := range all {
		if o.GPUs != r.GPUs {
			return fmt.Sprintf("%s @%d", r.Policy, r.GPUs)
		}
	}
	return string(r.Policy)
}

func seriesLine(name string, pts []Point, unit, scale float64) plot.Line {
	l := plot.Line{Name: name, X: make([]float64, len(pts)), Y: make([]float64, len(pts))}
	for i, p := range pts {
		l.X[i] = p.T.Seconds() / unit
		l.Y[i] = p.V * scale
	}
	return l
}
