package server

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"gpucloud/internal/api"
)

// A registration's labels are the node's metadata.labels; the next
// registration's replace them; bad ones are refused naming the field.
func TestRegistrationLabels(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	reg := registration("n1", 1)
	reg.Labels = map[string]string{api.LabelSimulated: "true", "rack": "r12"}
	if _, err := ts.admin.Register(ctx, reg); err != nil {
		t.Fatal(err)
	}
	n, err := ts.admin.Node(ctx, "n1")
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(reg.Labels, n.Metadata.Labels); d != "" {
		t.Errorf("labels (-want +got):\n%s", d)
	}
	if _, err := ts.admin.Register(ctx, registration("n1", 1)); err != nil {
		t.Fatal(err)
	}
	if n, _ = ts.admin.Node(ctx, "n1"); n.Metadata.Labels != nil {
		t.Errorf("labels after a registration without any: %v", n.Metadata.Labels)
	}
	bad := registration("n2", 1)
	bad.Labels = map[string]string{strings.Repeat("k", 64): "v"}
	if _, err := ts.admin.Register(ctx, bad); err == nil || !strings.Contains(err.Error(), "labels.") {
		t.Errorf("a 64-character label key: %v", err)
	}
}
