package plot

import (
	"bytes"
	"encoding/xml"
	"io"
	"strings"
	"testing"
)

// wellFormed checks that b parses as XML with an <svg> root.
func wellFormed(t *testing.T, b []byte) {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(b))
	root := ""
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("not well-formed SVG: %v", err)
		}
		if se, ok := tok.(xml.StartElement); ok && root == "" {
			root = se.Name.Local
		}
	}
	if root != "svg" {
		t.Fatalf("root element %q, want svg", root)
	}
}

func TestLines(t *testing.T) {
	var b bytes.Buffer
	err := Lines(&b, "Utilisation", "hours", "share", []Line{
		{Name: "fifo", X: []float64{0, 1, 2}, Y: []float64{0.1, 0.5, 0.4}},
		{Name: "las", X: []float64{0, 1, 2}, Y: []float64{0.2, 0.6, 0.3}},
	})
	if err != nil {
		t.Fatal(err)
	}
	wellFormed(t, b.Bytes())
	for _, want := range []string{"Utilisation", "fifo", "las", "hours"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("SVG lacks %q", want)
		}
	}
	if err := Lines(io.Discard, "bad", "x", "y", []Line{{X: []float64{1}, Y: nil}}); err == nil {
		t.Error("mismatched x and y accepted")
	}
}

func TestCDF(t *testing.T) {
	s := make([]float32, 5000)
	for i := range s {
		s[i] = float32(i * 10)
	}
	var b bytes.Buffer
	if err := CDF(&b, "JCT", "job completion time", []Dist{{Name: "default", Sorted: s}}); err != nil {
		t.Fatal(err)
	}
	wellFormed(t, b.Bytes())
	for _, want := range []string{"1m", "1h", "default"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("SVG lacks tick or legend %q", want)
		}
	}
	if err := CDF(io.Discard, "empty", "x", []Dist{{Name: "none"}}); err == nil {
		t.Error("a CDF of nothing should be an error")
	}
}
