// Package plot draws the simulator's figures as SVG with gonum/plot: time
// series (utilisation, queue length) and cumulative distributions (job
// completion times), one line per run.
package plot

import (
	"fmt"
	"io"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// Size of every figure.
const (
	Width  = 8 * vg.Inch
	Height = 4.5 * vg.Inch
)

// Line is one named series of points.
type Line struct {
	Name string
	X, Y []float64
}

// Lines draws series against a shared x axis as SVG.
func Lines(w io.Writer, title, xLabel, yLabel string, lines []Line) error {
	p := newPlot(title, xLabel, yLabel)
	for i, l := range lines {
		if len(l.X) != len(l.Y) {
			return fmt.Errorf("plot %q: line %q has %d x and %d y values", title, l.Name, len(l.X), len(l.Y))
		}
		if len(l.X) == 0 {
			continue
		}
		xys := make(plotter.XYs, len(l.X))
		for j := range l.X {
			xys[j] = plotter.XY{X: l.X[j], Y: l.Y[j]}
		}
		if err := addLine(p, i, l.Name, xys); err != nil {
			return err
		}
	}
	p.Y.Min = math.Min(p.Y.Min, 0)
	p.Legend.Left = false // time series start at zero on the left
	return save(p, w)
}

// Dist is a named sample, sorted ascending.
type Dist struct {
	Name   string
	Sorted []float32
}

// maxCDFPoints bounds the points drawn per distribution.
const maxCDFPoints = 800

// CDF draws the empirical cumulative distributions of durations in seconds
// on a logarithmic time axis.
func CDF(w io.Writer, title, xLabel string, dists []Dist) error {
	p := newPlot(title, xLabel, "fraction of jobs")
	lo, hi := math.Inf(1), math.Inf(-1)
	for i, d := range dists {
		n := len(d.Sorted)
		if n == 0 {
			continue
		}
		step := max(1, n/maxCDFPoints)
		var xys plotter.XYs
		for k := 0; k < n; k += step {
			xys = append(xys, plotter.XY{X: floorPos(d.Sorted[k]), Y: float64(k+1) / float64(n)})
		}
		xys = append(xys, plotter.XY{X: floorPos(d.Sorted[n-1]), Y: 1})
		lo = math.Min(lo, xys[0].X)
		hi = math.Max(hi, xys[len(xys)-1].X)
		if err := addLine(p, i, d.Name, xys); err != nil {
			return err
		}
	}
	if lo > hi {
		return fmt.Errorf("plot %q: no samples", title)
	}
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = durationTicks{}
	p.X.Min, p.X.Max = lo, math.Max(hi, lo*10)
	p.Y.Min, p.Y.Max = 0, 1
	return save(p, w)
}

// floorPos keeps zero durations drawable on a log axis.
func floorPos(v float32) float64 { return math.Max(float64(v), 1) }

func newPlot(title, xLabel, yLabel string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = xLabel
	p.Y.Label.Text = yLabel
	p.Add(plotter.NewGrid())
	p.Legend.Top = true
	p.Legend.Left = true
	return p
}

func addLine(p *plot.Plot, i int, name string, xys plotter.XYs) error {
	l, err := plotter.NewLine(xys)
	if err != nil {
		return fmt.Errorf("plot %q: line %q: %w", p.Title.Text, name, err)
	}
	l.Color = plotutil.Color(i)
	l.Dashes = plotutil.Dashes(i)
	l.Width = vg.Points(1.5)
	p.Add(l)
	if name != "" {
		p.Legend.Add(name, l)
	}
	return nil
}

func save(p *plot.Plot, w io.Writer) error {
	wt, err := p.WriterTo(Width, Height, "svg")
	if err != nil {
		return err
	}
	_, err = wt.WriteTo(w)
	return err
}

// durationTicks labels a logarithmic axis of seconds with round durations.
type durationTicks struct{}

var tickMarks = []struct {
	v     float64
	label string
}{
	{1, "1s"}, {10, "10s"}, {60, "1m"}, {600, "10m"}, {3600, "1h"}, {6 * 3600, "6h"},
	{86400, "1d"}, {7 * 86400, "1w"}, {30 * 86400, "30d"}, {365 * 86400, "1y"},
}

func (durationTicks) Ticks(lo, hi float64) []plot.Tick {
	var ts []plot.Tick
	for _, m := range tickMarks {
		if m.v >= lo/1.0001 && m.v <= hi*1.0001 {
			ts = append(ts, plot.Tick{Value: m.v, Label: m.label})
		}
	}
	if len(ts) < 2 {
		return plot.LogTicks{}.Ticks(lo, hi)
	}
	return ts
}
