package workload

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"time"
)

// Error is a problem in a workload file, with where it was found. Line is 0
// when the problem is not tied to one line, Column empty when it is not tied
// to one column.
type Error struct {
	File   string
	Line   int
	Column string
	Msg    string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	if e.Column != "" {
		fmt.Fprintf(&b, ": column %s", e.Column)
	}
	b.WriteString(": ")
	b.WriteString(e.Msg)
	return b.String()
}

// Format names a workload file format.
type Format string

const (
	FormatPhilly Format = "philly" // timestamp,duration,num_gpus,gpu_time,cluster
	FormatCSV    Format = "csv"    // the generic CSV (see CSVColumns)
)

// ParseFormat checks a --trace-format value.
func ParseFormat(s string) (Format, error) {
	switch Format(s) {
	case FormatPhilly, FormatCSV:
		return Format(s), nil
	}
	return "", fmt.Errorf("unknown trace format %q (want philly or csv)", s)
}

// Load reads a workload file in the given format.
func Load(path string, format Format) (*Trace, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	switch format {
	case FormatPhilly:
		return ParsePhilly(path, f)
	case FormatCSV:
		return ParseCSV(path, f)
	}
	return nil, fmt.Errorf("unknown trace format %q (want philly or csv)", format)
}

// CSV columns of the generic format. The first three are required.
const (
	ColSubmit      = "submit_s"      // seconds from the start of the workload, >= 0
	ColDuration    = "duration_s"    // seconds of run time on an ideal placement, > 0
	ColGPUs        = "gpus"          // GPUs of the whole job, >= 1
	ColID          = "id"            // unique; default job-<line>
	ColTenant      = "tenant"        // default "default"
	ColPriority    = "priority"      // int32, default 0
	ColGPUsPerNode = "gpus_per_node" // GPUs of one replica (one node); divides gpus; default: the largest divisor of gpus that fits a node
	ColGPUModel    = "gpu_model"     // e.g. H100-80GB; default: any
	ColPreemptible = "preemptible"   // true/false/1/0/yes/no; default true
	ColMinGPUs     = "min_gpus"      // > 0 makes the job elastic; a multiple of gpus_per_node
	ColCheckpoint  = "checkpoint_s"  // checkpoint interval; 0 = never; default: the simulator's --checkpoint
)

// CSVColumns lists the columns of the generic CSV format, required first.
var CSVColumns = []string{ColSubmit, ColDuration, ColGPUs, ColID, ColTenant, ColPriority,
	ColGPUsPerNode, ColGPUModel, ColPreemptible, ColMinGPUs, ColCheckpoint}

var requiredCSV = []string{ColSubmit, ColDuration, ColGPUs}

// DefaultTenant is the tenant of jobs that name none.
const DefaultTenant = "default"

// csvEpoch is offset 0 of a generic CSV workload: its times are relative.
var csvEpoch = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// table reads a CSV file with a header row and hands out cells by column
// name, with the line and column for errors.
type table struct {
	name string
	r    *csv.Reader
	cols map[string]int
	rec  []string
	line int
}

func newTable(name string, r io.Reader) (*table, []string, error) {
	cr := csv.NewReader(r)
	cr.ReuseRecord = true
	cr.Comment = '#'
	cr.TrimLeadingSpace = true
	t := &table{name: name, r: cr, cols: map[string]int{}}
	head, err := cr.Read()
	if err == io.EOF {
		return nil, nil, &Error{File: name, Msg: "empty file: want a header row"}
	}
	if err != nil {
		return nil, nil, t.csvErr(err)
	}
	for i, h := range head {
		h = strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")))
		line, _ := cr.FieldPos(i)
		if h == "" {
			return nil, nil, &Error{File: name, Line: line, Msg: fmt.Sprintf("header column %d has no name", i+1)}
		}
		if _, dup := t.cols[h]; dup {
			return nil, nil, &Error{File: name, Line: line, Column: h, Msg: "named twice in the header"}
		}
		t.cols[h] = i
	}
	return t, head, nil
}

// next reads one record; it returns false at the end of the file.
func (t *table) next() (bool, error) {
	rec, err := t.r.Read()
	if err == io.EOF {
		return false, nil
	}
	if err != nil {
		return false, t.csvErr(err)
	}
	t.rec = rec
	t.line, _ = t.r.FieldPos(0)
	return true, nil
}

func (t *table) csvErr(err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return &Error{File: t.name, Line: pe.Line, Msg: pe.Err.Error()}
	}
	return &Error{File: t.name, Msg: err.Error()}
}

func (t *table) has(col string) bool { _, ok := t.cols[col]; return ok }

// cell returns the trimmed value of col on the current line ("" when the
// column is absent).
func (t *table) cell(col string) string {
	i, ok := t.cols[col]
	if !ok {
		return ""
	}
	return strings.TrimSpace(t.rec[i])
}

func (t *table) errf(col, format string, args ...any) error {
	return &Error{File: t.name, Line: t.line, Column: col, Msg: fmt.Sprintf(format, args...)}
}

// maxSeconds bounds times and durations: a century, far beyond any trace,
// and well inside time.Duration.
const maxSeconds = 100 * 365 * 24 * 3600

func (t *table) seconds(col string, positive bool) (time.Duration, error) {
	v := t.cell(col)
	if v == "" {
		return 0, t.errf(col, "empty value")
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, t.errf(col, "%q is not a number of seconds", v)
	}
	if f < 0 || (positive && f == 0) {
		want := "at least 0"
		if positive {
			want = "positive"
		}
		return 0, t.errf(col, "%s must be %s", v, want)
	}
	if f > maxSeconds {
		return 0, t.errf(col, "%s seconds is more than a century", v)
	}
	return time.Duration(math.Round(f * 1e9)), nil
}

func (t *table) integer(col string, lo, hi int64) (int64, error) {
	v := t.cell(col)
	if v == "" {
		return 0, t.errf(col, "empty value")
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		// Accept "8.0" as written by pandas, but not 8.5.
		f, ferr := strconv.ParseFloat(v, 64)
		if ferr != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
			return 0, t.errf(col, "%q is not an integer", v)
		}
		n = int64(f)
	}
	if n < lo || n > hi {
		return 0, t.errf(col, "%d is out of range [%d, %d]", n, lo, hi)
	}
	return n, nil
}

// maxGPUs bounds the size of one job (and keeps sums inside int on every
// platform).
const maxGPUs = 1 << 22

// ParseCSV reads the generic CSV workload format: a header row naming the
// columns in any order, then one job per line. Unknown columns are ignored
// with one warning each; a missing required column or a bad value is an
// error naming the line and the column.
func ParseCSV(name string, r io.Reader) (*Trace, error) {
	t, head, err := newTable(name, r)
	if err != nil {
		return nil, err
	}
	tr := &Trace{Name: name, Start: csvEpoch}
	var missing []string
	for _, c := range requiredCSV {
		if !t.has(c) {
			missing = append(missing, c)
		}
	}
	if len(missing) > 0 {
		return nil, &Error{File: name, Line: 1, Column: strings.Join(missing, ","),
			Msg: fmt.Sprintf("required column missing from the header (required: %s)", strings.Join(requiredCSV, ","))}
	}
	known := map[string]bool{}
	for _, c := range CSVColumns {
		known[c] = true
	}
	for _, h := range head {
		h = strings.ToLower(strings.TrimSpace(strings.TrimPrefix(h, "\ufeff")))
		if !known[h] {
			tr.Warnings = append(tr.Warnings, fmt.Sprintf("%s:1: column %q is not a workload column; ignored (known: %s)",
				name, h, strings.Join(CSVColumns, ",")))
		}
	}
	seen := map[string]int{}
	for {
		ok, err := t.next()
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		j, err := t.csvJob()
		if err != nil {
			return nil, err
		}
		if prev, dup := seen[j.ID]; dup {
			return nil, t.errf(ColID, "id %q already used on line %d", j.ID, prev)
		}
		seen[j.ID] = j.Line
		tr.Jobs = append(tr.Jobs, j)
	}
	if len(tr.Jobs) == 0 {
		return nil, &Error{File: name, Msg: "no jobs after the header"}
	}
	sortJobs(tr.Jobs)
	return tr, nil
}

func (t *table) csvJob() (Job, error) {
	j := Job{Line: t.line, Tenant: DefaultTenant, Preemptible: true}
	var err error
	if j.Submit, err = t.seconds(ColSubmit, false); err != nil {
		return j, err
	}
	if j.Duration, err = t.seconds(ColDuration, true); err != nil {
		return j, err
	}
	g, err := t.integer(ColGPUs, 1, maxGPUs)
	if err != nil {
		return j, err
	}
	j.GPUs = int(g)
	j.ID = t.cell(ColID)
	if j.ID == "" {
		j.ID = fmt.Sprintf("job-%d", t.line)
	}
	if v := t.cell(ColTenant); v != "" {
		j.Tenant = v
	}
	if t.cell(ColPriority) != "" {
		p, err := t.integer(ColPriority, math.MinInt32, math.MaxInt32)
		if err != nil {
			return j, err
		}
		j.Priority = int32(p)
	}
	if t.cell(ColGPUsPerNode) != "" {
		n, err := t.integer(ColGPUsPerNode, 1, 64)
		if err != nil {
			return j, err
		}
		if j.GPUs%int(n) != 0 {
			return j, t.errf(ColGPUsPerNode, "%d does not divide gpus %d", n, j.GPUs)
		}
		j.GPUsPerNode = int(n)
	}
	j.GPUModel = t.cell(ColGPUModel)
	if v := t.cell(ColPreemptible); v != "" {
		b, ok := parseBool(v)
		if !ok {
			return j, t.errf(ColPreemptible, "%q is not a boolean (true/false, yes/no, 1/0)", v)
		}
		j.Preemptible = b
	}
	if t.cell(ColMinGPUs) != "" {
		n, err := t.integer(ColMinGPUs, 0, int64(j.GPUs))
		if err != nil {
			return j, err
		}
		if n > 0 && j.GPUsPerNode > 0 && int(n)%j.GPUsPerNode != 0 {
			return j, t.errf(ColMinGPUs, "%d is not a multiple of gpus_per_node %d", n, j.GPUsPerNode)
		}
		j.MinGPUs = int(n)
	}
	if t.cell(ColCheckpoint) != "" {
		c, err := t.seconds(ColCheckpoint, false)
		if err != nil {
			return j, err
		}
		j.Checkpoint = c
		if c == 0 {
			j.Checkpoint = NoCheckpoint
		}
	}
	return j, nil
}

func parseBool(s string) (bool, bool) {
	switch strings.ToLower(s) {
	case "1", "true", "t", "yes", "y":
		return true, true
	case "0", "false", "f", "no", "n":
		return false, true
	}
	return false, false
}

// Philly columns (petuum/adaptdl simulator/traces/philly.csv).
var phillyColumns = []string{"timestamp", "duration", "num_gpus", "gpu_time", "cluster"}

const phillyTime = "2006-01-02 15:04:05"

// ParsePhilly reads the Philly job list as derived by Pollux (AdaptDL):
// `timestamp,duration,num_gpus,gpu_time,cluster`, one job per row, in no
// particular order. The virtual cluster becomes the tenant; the submit
// times become offsets from the earliest one. Jobs get ids p<row> in file
// order, and gpus_per_node is left to the simulator (the largest divisor
// of num_gpus that fits a node: min(gpus, 8) on 8-GPU nodes, 6 for the
// seven 12-GPU jobs).
func ParsePhilly(name string, r io.Reader) (*Trace, error) {
	t, _, err := newTable(name, r)
	if err != nil {
		return nil, err
	}
	for _, c := range phillyColumns {
		if !t.has(c) {
			return nil, &Error{File: name, Line: 1, Column: c,
				Msg: fmt.Sprintf("missing from the header; a Philly job list has %s", strings.Join(phillyColumns, ","))}
		}
	}
	tr := &Trace{Name: name}
	var stamps []time.Time
	for row := 0; ; row++ {
		ok, err := t.next()
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		ts, err := time.Parse(phillyTime, t.cell("timestamp"))
		if err != nil {
			return nil, t.errf("timestamp", "%q is not a time like 2017-10-09 07:01:55", t.cell("timestamp"))
		}
		d, err := t.seconds("duration", true)
		if err != nil {
			return nil, err
		}
		g, err := t.integer("num_gpus", 1, maxGPUs)
		if err != nil {
			return nil, err
		}
		tenant := t.cell("cluster")
		if tenant == "" {
			tenant = DefaultTenant
		}
		stamps = append(stamps, ts)
		tr.Jobs = append(tr.Jobs, Job{ID: fmt.Sprintf("p%05d", row), Tenant: tenant, Duration: d,
			GPUs: int(g), Preemptible: true, Line: t.line})
	}
	if len(tr.Jobs) == 0 {
		return nil, &Error{File: name, Msg: "no jobs after the header"}
	}
	tr.Start = stamps[0]
	for _, s := range stamps {
		if s.Before(tr.Start) {
			tr.Start = s
		}
	}
	for i := range tr.Jobs {
		tr.Jobs[i].Submit = stamps[i].Sub(tr.Start)
		if tr.Jobs[i].Submit > maxSeconds*time.Second {
			return nil, &Error{File: name, Line: tr.Jobs[i].Line, Column: "timestamp",
				Msg: fmt.Sprintf("%s is more than a century after the first job (%s)",
					stamps[i].Format(phillyTime), tr.Start.Format(phillyTime))}
		}
	}
	sortJobs(tr.Jobs)
	return tr, nil
}
