package sim

import (
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"

	"gpucloud/internal/sched"
	"gpucloud/internal/sim/workload"
)

// QueueSpec is one queue of a queue file. Guaranteed and BorrowLimit are
// GPUs, or shares of the fleet when the Pct flags are set, so that one file
// serves several fleet sizes.
type QueueSpec struct {
	Name, Parent                  string
	Guaranteed, BorrowLimit       float64
	GuaranteedPct, BorrowLimitPct bool
	Weight                        float64
	Line                          int
}

// queueColumns of a queue file; name is required.
var queueColumns = []string{"name", "parent", "guaranteed", "borrow_limit", "weight"}

// LoadQueues reads a queue file: a CSV with a header naming columns among
// name,parent,guaranteed,borrow_limit,weight, one queue per line.
// guaranteed and borrow_limit are GPUs or a share of the fleet ("25%");
// borrow_limit -1 or empty means no limit; weight defaults to 1.
func LoadQueues(path string) ([]QueueSpec, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ParseQueues(path, f)
}

// ParseQueues is LoadQueues on a reader; name is used in errors.
func ParseQueues(name string, r io.Reader) ([]QueueSpec, error) {
	cr := csv.NewReader(r)
	cr.Comment = '#'
	cr.TrimLeadingSpace = true
	errAt := func(line int, col, format string, args ...any) error {
		return &workload.Error{File: name, Line: line, Column: col, Msg: fmt.Sprintf(format, args...)}
	}
	head, err := cr.Read()
	if err != nil {
		if err == io.EOF {
			return nil, errAt(0, "", "empty file: want a header row")
		}
		return nil, csvError(name, err)
	}
	cols := map[string]int{}
	for i, h := range head {
		h = strings.ToLower(strings.TrimSpace(h))
		known := false
		for _, c := range queueColumns {
			known = known || c == h
		}
		if !known {
			return nil, errAt(1, h, "not a queue column (want %s)", strings.Join(queueColumns, ","))
		}
		cols[h] = i
	}
	if _, ok := cols["name"]; !ok {
		return nil, errAt(1, "name", "required column missing from the header")
	}
	cell := func(rec []string, c string) string {
		if i, ok := cols[c]; ok {
			return strings.TrimSpace(rec[i])
		}
		return ""
	}
	var out []QueueSpec
	seen := map[string]int{}
	for {
		rec, err := cr.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, csvError(name, err)
		}
		line, _ := cr.FieldPos(0)
		q := QueueSpec{Name: cell(rec, "name"), Parent: cell(rec, "parent"), BorrowLimit: -1, Weight: 1, Line: line}
		if q.Name == "" {
			return nil, errAt(line, "name", "empty value")
		}
		if prev, dup := seen[q.Name]; dup {
			return nil, errAt(line, "name", "queue %q already defined on line %d", q.Name, prev)
		}
		seen[q.Name] = line
		if v := cell(rec, "guaranteed"); v != "" {
			if q.Guaranteed, q.GuaranteedPct, err = gpusOrShare(v, false); err != nil {
				return nil, errAt(line, "guaranteed", "%v", err)
			}
		}
		if v := cell(rec, "borrow_limit"); v != "" {
			if q.BorrowLimit, q.BorrowLimitPct, err = gpusOrShare(v, true); err != nil {
				return nil, errAt(line, "borrow_limit", "%v", err)
			}
		}
		if v := cell(rec, "weight"); v != "" {
			w, err := strconv.ParseFloat(v, 64)
			if err != nil || !(w > 0) || math.IsInf(w, 0) {
				return nil, errAt(line, "weight", "%q must be a positive number", v)
			}
			q.Weight = w
		}
		out = append(out, q)
	}
	if len(out) == 0 {
		return nil, errAt(0, "", "no queues after the header")
	}
	return out, nil
}

func csvError(name string, err error) error {
	var pe *csv.ParseError
	if errors.As(err, &pe) {
		return &workload.Error{File: name, Line: pe.Line, Msg: pe.Err.Error()}
	}
	return &workload.Error{File: name, Msg: err.Error()}
}

// gpusOrShare reads "64" (GPUs) or "12.5%" (of the fleet); -1 means no
// limit where allowed.
func gpusOrShare(v string, allowUnlimited bool) (float64, bool, error) {
	if allowUnlimited && v == "-1" {
		return -1, false, nil
	}
	if p, ok := strings.CutSuffix(v, "%"); ok {
		f, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil || f < 0 || f > 100 {
			return 0, false, fmt.Errorf("%q is not a share between 0%% and 100%%", v)
		}
		return f / 100, true, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, false, fmt.Errorf("%q is not a number of GPUs or a share like 25%%", v)
	}
	return float64(n), false, nil
}

// resolve turns specs into the scheduler's queues for a fleet of gpus GPUs.
func resolveQueues(specs []QueueSpec, gpus int) []sched.Queue {
	amount := func(v float64, pct bool) int {
		if pct {
			return int(math.Floor(v * float64(gpus)))
		}
		return int(v)
	}
	qs := make([]sched.Queue, len(specs))
	for i, s := range specs {
		qs[i] = sched.Queue{Name: s.Name, Parent: s.Parent, Guaranteed: amount(s.Guaranteed, s.GuaranteedPct),
			BorrowLimit: amount(s.BorrowLimit, s.BorrowLimitPct), Weight: s.Weight}
		if s.BorrowLimit < 0 {
			qs[i].BorrowLimit = -1
		}
	}
	return qs
}
