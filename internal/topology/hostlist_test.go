package topology

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestExpandHostlist(t *testing.T) {
	tests := []struct {
		in   string
		want []string
	}{
		{"n1", []string{"n1"}},
		{"n1,n2", []string{"n1", "n2"}},
		{"peta[19957-19959]", []string{"peta19957", "peta19958", "peta19959"}},
		{"switch.2.[1-3]", []string{"switch.2.1", "switch.2.2", "switch.2.3"}},
		{"tux[0-1,12,18-19]", []string{"tux0", "tux1", "tux12", "tux18", "tux19"}},
		{"n[08-10]", []string{"n08", "n09", "n10"}},
		{"n[8-10]", []string{"n8", "n9", "n10"}},
		{"r[1-2]n[01-02]", []string{"r1n01", "r1n02", "r2n01", "r2n02"}},
		{"a-[1-2]-ib", []string{"a-1-ib", "a-2-ib"}},
		{" n1 , n[2-3] ", []string{"n1", "n2", "n3"}},
		{"[7-8]", []string{"7", "8"}},
		{"", nil},
	}
	for _, tc := range tests {
		got, err := ExpandHostlist(tc.in)
		if err != nil {
			t.Errorf("ExpandHostlist(%q): %v", tc.in, err)
			continue
		}
		if d := cmp.Diff(tc.want, got); d != "" {
			t.Errorf("ExpandHostlist(%q) (-want +got):\n%s", tc.in, d)
		}
	}
}

func TestExpandHostlistErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{"n[5-2]", `hostlist "n[5-2]": range 5-2 counts down`},
		{"n[1-", `hostlist "n[1-": '[' without ']'`},
		{"n1]", `hostlist "n1]": ']' without '['`},
		{"n]1[2]", `hostlist "n]1[2]": ']' without '['`},
		{"n[]", `hostlist "n[]": empty brackets`},
		{"n[a-b]", `hostlist "n[a-b]": "a" is not a number`},
		{"n[1-2-3]", `hostlist "n[1-2-3]": "2-3" is not a number`},
		{"n[[1]]", `hostlist "n[[1]]": nested '['`},
		{"n[0-999999999]", `hostlist "n[0-999999999]": more than`},
	}
	for _, tc := range tests {
		_, err := ExpandHostlist(tc.in)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("ExpandHostlist(%q) = %v, want %q", tc.in, err, tc.want)
		}
	}
}

func TestCompressHostlist(t *testing.T) {
	tests := []struct {
		in   []string
		want string
	}{
		{[]string{"n1", "n2", "n3"}, "n[1-3]"},
		{[]string{"n08", "n09", "n10"}, "n[08-10]"},
		{[]string{"n8", "n9", "n10"}, "n[8-9],n10"},
		{[]string{"n3", "n2", "n1"}, "n3,n2,n1"},
		{[]string{"a", "b1", "b2", "c"}, "a,b[1-2],c"},
		{nil, ""},
	}
	for _, tc := range tests {
		got := CompressHostlist(tc.in)
		if got != tc.want {
			t.Errorf("CompressHostlist(%q) = %q, want %q", tc.in, got, tc.want)
		}
		back, err := ExpandHostlist(got)
		if err != nil || !cmp.Equal(back, tc.in, hostlistSameNames) {
			t.Errorf("ExpandHostlist(%q) = %q, %v; want %q", got, back, err, tc.in)
		}
	}
}

var hostlistSameNames = cmp.Comparer(func(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
})
