package sim

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// progress draws a one-line progress bar for runs that last more than a
// couple of seconds of wall time. It redraws in place with a carriage
// return, so it is only for terminals; the caller decides.
type progress struct {
	w        io.Writer
	label    string
	total    int
	began    time.Time
	lastDraw time.Time
	drawn    bool
}

const (
	progressAfter = 2 * time.Second
	progressEvery = 250 * time.Millisecond
	barWidth      = 30
)

func newProgress(w io.Writer, label string, total int) *progress {
	return &progress{w: w, label: label, total: total, began: time.Now()}
}

func (p *progress) update(done int, sim time.Duration, events int64) {
	now := time.Now()
	if now.Sub(p.began) < progressAfter || now.Sub(p.lastDraw) < progressEvery {
		return
	}
	p.lastDraw = now
	p.draw(done, sim, events, now)
}

func (p *progress) draw(done int, sim time.Duration, events int64, now time.Time) {
	p.drawn = true
	var b strings.Builder
	b.WriteString("\r")
	if p.label != "" {
		b.WriteString(p.label + " ")
	}
	if p.total > 0 {
		frac := min(float64(done)/float64(p.total), 1)
		fill := int(frac * barWidth)
		fmt.Fprintf(&b, "[%s%s] %3.0f%% %d/%d jobs", strings.Repeat("#", fill), strings.Repeat(".", barWidth-fill),
			100*frac, done, p.total)
	} else {
		fmt.Fprintf(&b, "%d jobs", done)
	}
	wall := now.Sub(p.began).Seconds()
	fmt.Fprintf(&b, ", day %.1f simulated, %.0fk events/s ", sim.Hours()/24, float64(events)/wall/1000)
	io.WriteString(p.w, b.String())
}

// finish draws the final state and ends the line, if a bar was drawn.
func (p *progress) finish(done int, sim time.Duration, events int64) {
	if !p.drawn {
		return
	}
	p.draw(done, sim, events, time.Now())
	io.WriteString(p.w, "\n")
}
