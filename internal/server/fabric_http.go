package server

import (
	"encoding/json"
	"net/http"
	"sync"

	"gpucloud/internal/api"
	"gpucloud/internal/topology"
)

// fabricCache holds the JSON of GET /v1/fabric: building the document of
// a 100k-GPU fabric costs far more than serving it, and it only changes
// when nodes join, leave or change hardware (state.nodesGen).
type fabricCache struct {
	mu   sync.Mutex
	gen  uint64
	body []byte
}

// getFabric serves the fabric the scheduler places on: the configured
// one plus the registered nodes it does not list under leaf "local"
// (buildFabric, as the leader builds it), as a topology.Document. With no
// fabric and no node it is a document without domains.
func (s *Server) getFabric(w http.ResponseWriter, r *http.Request) error {
	if err := s.caughtUp(r.Context()); err != nil {
		return err
	}
	body, err := s.fabricJSON()
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, err = w.Write(body)
	return err
}

func (s *Server) fabricJSON() ([]byte, error) {
	c := &s.fabricDoc
	c.mu.Lock()
	defer c.mu.Unlock()
	s.st.mu.RLock()
	gen := s.st.nodesGen
	if c.body != nil && c.gen == gen {
		s.st.mu.RUnlock()
		return c.body, nil
	}
	// Stored nodes are replaced, never changed in place: the pointers
	// stay valid after the lock is released.
	nodes := make([]*api.Node, 0, len(s.st.nodes))
	for _, rec := range s.st.nodes {
		nodes = append(nodes, rec.node)
	}
	s.st.mu.RUnlock()
	f, err := buildFabric(s.cfg.Fabric, nodes)
	if err != nil {
		return nil, err
	}
	doc := &topology.Document{APIVersion: topology.APIVersion, Kind: topology.KindFabric}
	if f != nil {
		doc = f.Document()
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	c.gen, c.body = gen, append(b, '\n')
	return c.body, nil
}
