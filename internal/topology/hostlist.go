package topology

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"
)

// maxHostlist bounds how many names one expression may expand to (262,144:
// 16 times the nodes of a 131,072-GPU fleet), so that a
// typo such as n[0-999999999] is an error rather than an out-of-memory.
const maxHostlist = 1 << 18

// ExpandHostlist expands a Slurm hostlist expression: comma-separated items,
// each a name with zero or more bracketed ranges ("peta[19940-19959]",
// "switch.2.[1-6]", "n[1,3,5-7]", "r[1-2]n[01-04]"). Zero padding follows the
// width of the lower bound, as in Slurm.
func ExpandHostlist(expr string) ([]string, error) {
	var out []string
	for _, item := range splitTop(expr) {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		names, err := expandItem(item, len(out))
		if err != nil {
			return nil, err
		}
		out = append(out, names...)
	}
	return out, nil
}

// splitTop splits on commas outside brackets.
func splitTop(s string) []string {
	var parts []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '[':
			depth++
		case ']':
			depth--
		case ',':
			if depth == 0 {
				parts = append(parts, s[start:i])
				start = i + 1
			}
		}
	}
	return append(parts, s[start:])
}

func expandItem(item string, already int) ([]string, error) {
	open := strings.IndexByte(item, '[')
	if open < 0 {
		if strings.IndexByte(item, ']') >= 0 {
			return nil, fmt.Errorf("hostlist %q: ']' without '['", item)
		}
		return []string{item}, nil
	}
	end := strings.IndexByte(item[open:], ']')
	if end < 0 {
		return nil, fmt.Errorf("hostlist %q: '[' without ']'", item)
	}
	end += open
	prefix, body, rest := item[:open], item[open+1:end], item[end+1:]
	if strings.IndexByte(prefix, ']') >= 0 {
		return nil, fmt.Errorf("hostlist %q: ']' without '['", item)
	}
	if strings.IndexByte(body, '[') >= 0 {
		return nil, fmt.Errorf("hostlist %q: nested '['", item)
	}
	values, err := expandRanges(item, body)
	if err != nil {
		return nil, err
	}
	tails, err := expandItem(rest, already)
	if err != nil {
		return nil, err
	}
	if already+len(values)*len(tails) > maxHostlist {
		return nil, fmt.Errorf("hostlist %q: more than %d names", item, maxHostlist)
	}
	out := make([]string, 0, len(values)*len(tails))
	for _, v := range values {
		for _, t := range tails {
			out = append(out, prefix+v+t)
		}
	}
	return out, nil
}

func expandRanges(item, body string) ([]string, error) {
	if body == "" {
		return nil, fmt.Errorf("hostlist %q: empty brackets", item)
	}
	var out []string
	for _, r := range strings.Split(body, ",") {
		lo, hi, isRange := strings.Cut(r, "-")
		a, err := parseHostNum(item, lo)
		if err != nil {
			return nil, err
		}
		b := a
		if isRange {
			if b, err = parseHostNum(item, hi); err != nil {
				return nil, err
			}
		}
		if b < a {
			return nil, fmt.Errorf("hostlist %q: range %s counts down", item, r)
		}
		if b-a >= maxHostlist || len(out)+int(b-a) >= maxHostlist {
			return nil, fmt.Errorf("hostlist %q: more than %d names", item, maxHostlist)
		}
		width := len(lo)
		var buf []byte
		for v := a; v <= b; v++ {
			out = append(out, padInt(buf[:0], v, width))
		}
	}
	return out, nil
}

func parseHostNum(item, s string) (int64, error) {
	if s == "" || len(s) > 18 {
		return 0, fmt.Errorf("hostlist %q: %q is not a number", item, s)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, fmt.Errorf("hostlist %q: %q is not a number", item, s)
		}
	}
	return strconv.ParseInt(s, 10, 64)
}

// CompressHostlist writes names as a hostlist expression, folding runs of
// names that differ only in a trailing number of the same width
// ("n[000-031]"). The order of names is kept, so ExpandHostlist gives them
// back exactly.
func CompressHostlist(names []string) string {
	var b strings.Builder
	for i := 0; i < len(names); {
		prefix, num, width, ok := splitNum(names[i])
		j := i + 1
		if ok {
			for j < len(names) {
				p, n, w, ok2 := splitNum(names[j])
				if !ok2 || p != prefix || w != width || n != num+int64(j-i) {
					break
				}
				j++
			}
		}
		if b.Len() > 0 {
			b.WriteByte(',')
		}
		if j-i == 1 {
			b.WriteString(names[i])
		} else {
			fmt.Fprintf(&b, "%s[%0*d-%0*d]", prefix, width, num, width, num+int64(j-i-1))
		}
		i = j
	}
	return b.String()
}

// splitNum splits "abc012" into "abc", 12, 3. Names holding characters that
// would read as hostlist syntax are not folded.
func splitNum(s string) (prefix string, num int64, width int, ok bool) {
	if strings.ContainsAny(s, "[],") {
		return "", 0, 0, false
	}
	i := len(s)
	for i > 0 && s[i-1] >= '0' && s[i-1] <= '9' {
		i--
	}
	if i == len(s) || len(s)-i > 18 {
		return "", 0, 0, false
	}
	n, err := strconv.ParseInt(s[i:], 10, 64)
	if err != nil {
		return "", 0, 0, false
	}
	// A number written with fewer digits than its width (n01) only
	// round-trips through a range when every member keeps that width,
	// which holds because width is part of the run key above.
	return s[:i], n, len(s) - i, true
}

// padInt formats v with at least width digits, zero-padded, without the
// cost of fmt on a path that expands every node name of a fleet.
func padInt(buf []byte, v int64, width int) string {
	buf = strconv.AppendInt(buf, v, 10)
	if pad := width - len(buf); pad > 0 {
		buf = append(make([]byte, 0, width), bytes.Repeat([]byte{'0'}, pad)...)
		buf = strconv.AppendInt(buf, v, 10)
	}
	return string(buf)
}
