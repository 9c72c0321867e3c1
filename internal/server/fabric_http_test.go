package server

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"gpucloud/internal/api"
	"gpucloud/internal/topology"
)

// fetchFabric reads GET /v1/fabric back into a fabric.
func fetchFabric(t *testing.T, ts *testServer, token string) *topology.Fabric {
	t.Helper()
	code, b := raw(t, "GET", ts.url+"/v1/fabric", token, "", nil)
	if code != 200 {
		t.Fatalf("GET /v1/fabric: %d %s", code, b)
	}
	var doc topology.Document
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatalf("GET /v1/fabric: %v", err)
	}
	if len(doc.Spec.Domains) == 0 {
		return nil
	}
	f, _, err := topology.Parse("GET /v1/fabric", b, topology.FormatNative)
	if err != nil {
		t.Fatalf("GET /v1/fabric is not a fabric document: %v", err)
	}
	return f
}

func TestFabricEndpoint(t *testing.T) {
	base, err := topology.Generate("ndv5", 64)
	if err != nil {
		t.Fatal(err)
	}
	ts := startServer(t, func(c *Config) { c.Fabric = base })
	ctx := context.Background()
	ts.tenant(t, "team")

	// The configured fabric as is, to any user.
	f := fetchFabric(t, ts, ts.token)
	if f == nil || len(f.Nodes) != len(base.Nodes) || f.NumGPUs() != base.NumGPUs() || f.Name != base.Name {
		t.Fatalf("fabric before registration: %+v", f)
	}
	if _, ok := f.NodeByName(base.Nodes[0].Name); !ok {
		t.Fatalf("fabric lacks %s", base.Nodes[0].Name)
	}
	if code, b := raw(t, "GET", ts.url+"/v1/fabric", "", "", nil); code != 401 {
		t.Fatalf("without a token: %d %s", code, b)
	}

	// A node the fabric does not list joins under leaf "local"; a node it
	// lists changes nothing.
	if _, err := ts.admin.Register(ctx, registration("extra1", 4)); err != nil {
		t.Fatal(err)
	}
	if _, err := ts.admin.Register(ctx, registration(base.Nodes[1].Name, 8)); err != nil {
		t.Fatal(err)
	}
	f = fetchFabric(t, ts, ts.token)
	id, ok := f.NodeByName("extra1")
	if !ok {
		t.Fatal("registered node extra1 is not in the served fabric")
	}
	if leaf := f.Domains[f.Nodes[id].Leaf].Name; leaf != LocalLeaf {
		t.Fatalf("extra1 under leaf %s, want %s", leaf, LocalLeaf)
	}
	if len(f.Nodes) != len(base.Nodes)+1 || f.NodeGPUs(id) != 4 {
		t.Fatalf("served fabric: %d nodes (want %d), extra1 has %d GPUs", len(f.Nodes), len(base.Nodes)+1, f.NodeGPUs(id))
	}

	// A tenant sees the same; a deleted node leaves it.
	if g := fetchFabric(t, ts, userToken(t, ts)); len(g.Nodes) != len(f.Nodes) {
		t.Fatalf("tenant sees %d nodes, admin %d", len(g.Nodes), len(f.Nodes))
	}
	if code, b := raw(t, "DELETE", ts.url+"/v1/nodes/extra1", ts.token, "", nil); code != 200 {
		t.Fatalf("delete node: %d %s", code, b)
	}
	waitFor(t, 5*time.Second, "extra1 to leave the fabric", func() bool {
		_, ok := fetchFabric(t, ts, ts.token).NodeByName("extra1")
		return !ok
	})
}

// Without a configured fabric the document has no domains until a node
// registers.
func TestFabricEndpointWithoutFabric(t *testing.T) {
	ts := startServer(t, nil)
	if f := fetchFabric(t, ts, ts.token); f != nil {
		t.Fatalf("fabric with no node: %d nodes", len(f.Nodes))
	}
	if _, err := ts.admin.Register(context.Background(), registration("n1", 2)); err != nil {
		t.Fatal(err)
	}
	f := fetchFabric(t, ts, ts.token)
	if f == nil || len(f.Nodes) != 1 || f.NumGPUs() != 2 {
		t.Fatalf("fabric of one registered node: %+v", f)
	}
}

func userToken(t *testing.T, ts *testServer) string {
	t.Helper()
	tok, err := ts.admin.CreateToken(context.Background(), api.TokenRequest{Role: api.RoleTenant, Tenant: "team"})
	if err != nil {
		t.Fatal(err)
	}
	return tok.Token
}
