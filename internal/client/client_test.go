package client

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestSSE(t *testing.T) {
	in := ": keep-alive\n\nevent: job\ndata: {\"a\":1}\n\ndata: line1\ndata: line2\n\nevent: x\n\n"
	type ev struct{ Event, Data string }
	var got []ev
	if err := SSE(strings.NewReader(in), func(e string, d []byte) error {
		got = append(got, ev{e, string(d)})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	want := []ev{{"job", `{"a":1}`}, {"", "line1\nline2"}}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("(-want +got):\n%s", d)
	}
}

func TestNewSplitsAndNormalisesURLs(t *testing.T) {
	c := New([]string{"http://a:1/, b:2", "https://c:3"}, "t", Options{})
	if d := cmp.Diff([]string{"http://a:1", "http://b:2", "https://c:3"}, c.urls); d != "" {
		t.Fatal(d)
	}
	if id := NewJobID(); len(id) != 15 || id[0] != 'j' {
		t.Fatalf("job id %q", id)
	}
}
