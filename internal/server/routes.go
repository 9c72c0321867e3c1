package server

import (
	"net/http"

	"gpucloud/internal/api"
	"gpucloud/internal/topology"
)

// routeTable lists every endpoint of /v1. The OpenAPI document is made
// from it, so the two cannot drift.
func (s *Server) routeTable() []route {
	return append([]route{
		{method: "GET", path: "/healthz", access: accessPublic, summary: "Liveness", resp: api.Status{}, handler: s.healthz},
		{method: "GET", path: "/readyz", access: accessPublic, summary: "Readiness: the state is in step with etcd", resp: ClusterInfo{}, handler: s.readyz},
		{method: "GET", path: "/v1/openapi.json", access: accessPublic, summary: "This API as OpenAPI 3", handler: s.openapi},
		{method: "GET", path: "/v1/whoami", access: accessAny, summary: "The caller's role and tenant", resp: Whoami{}, handler: s.whoami},
		{method: "GET", path: "/v1/cluster", access: accessAny, summary: "Leader, fabric and capacity", resp: ClusterInfo{}, handler: s.cluster},
		{method: "GET", path: "/v1/fabric", access: accessUser, summary: "The fabric the scheduler places on (topology.Document), with registered nodes it does not list under leaf \"local\"", resp: topology.Document{}, handler: s.getFabric},

		{method: "GET", path: "/v1/tenants", access: accessUser, summary: "List tenants (a tenant sees itself)", resp: api.List[api.Tenant]{}, handler: s.listTenants},
		{method: "POST", path: "/v1/tenants", access: accessAdmin, summary: "Create a tenant", req: api.Tenant{}, resp: api.Tenant{}, handler: s.createTenant},
		{method: "GET", path: "/v1/tenants/{name}", access: accessUser, summary: "Get a tenant", resp: api.Tenant{}, handler: s.getTenant},
		{method: "DELETE", path: "/v1/tenants/{name}", access: accessAdmin, summary: "Delete a tenant without live jobs, and its tokens", resp: api.Status{}, handler: s.deleteTenant},

		{method: "GET", path: "/v1/tokens", access: accessAdmin, summary: "List tokens (without secrets)", resp: api.List[api.TokenInfo]{}, handler: s.listTokens},
		{method: "POST", path: "/v1/tokens", access: accessAdmin, summary: "Make a token; the secret is shown once", req: api.TokenRequest{}, resp: api.TokenResponse{}, handler: s.createToken},
		{method: "DELETE", path: "/v1/tokens/{id}", access: accessAdmin, summary: "Revoke a token", resp: api.Status{}, handler: s.deleteToken},

		{method: "GET", path: "/v1/queues", access: accessUser, summary: "List queues", resp: api.List[api.Queue]{}, handler: s.listQueues},
		{method: "GET", path: "/v1/queues/{name}", access: accessUser, summary: "Get a queue", resp: api.Queue{}, handler: s.getQueue},
		{method: "PUT", path: "/v1/queues/{name}", access: accessAdmin, summary: "Create or replace a queue", req: api.Queue{}, resp: api.Queue{}, handler: s.putQueue},
		{method: "DELETE", path: "/v1/queues/{name}", access: accessAdmin, summary: "Delete a queue without live jobs", resp: api.Status{}, handler: s.deleteQueue},

		{method: "POST", path: "/v1/jobs", access: accessUser, summary: "Submit a job (JSON or YAML)", req: api.Job{}, resp: api.Job{}, handler: s.createJob},
		{method: "GET", path: "/v1/jobs", access: accessUser, summary: "List jobs (?phase=&queue=&tenant=&limit=&after=)", resp: api.List[api.Job]{}, handler: s.listJobs},
		{method: "GET", path: "/v1/jobs/{id}", access: accessUser, summary: "Get a job", resp: api.Job{}, handler: s.getJob},
		{method: "POST", path: "/v1/jobs/{id}/cancel", access: accessUser, summary: "Cancel a job", resp: api.Job{}, handler: s.cancelJob},
		{method: "DELETE", path: "/v1/jobs/{id}", access: accessUser, summary: "Delete a finished job, its reports and logs", resp: api.Status{}, handler: s.deleteJob},
		{method: "GET", path: "/v1/jobs/{id}/logs", access: accessUser, summary: "A job's logs, relayed from the agents (?rank=&follow=true)", handler: s.jobLogs, stream: true},
		{method: "GET", path: "/v1/jobs/{id}/events", access: accessUser, summary: "A job's events", resp: api.List[api.Event]{}, handler: s.jobEvents},

		{method: "GET", path: "/v1/nodes", access: accessUser, summary: "List nodes", resp: api.List[api.Node]{}, handler: s.listNodes},
		{method: "GET", path: "/v1/nodes/{name}", access: accessAny, summary: "Get a node", resp: api.Node{}, handler: s.getNode},
		// Agents may cordon and uncordon (a node that fails its health
		// checks fences itself), not drain or delete.
		{method: "POST", path: "/v1/nodes/{name}/cordon", access: accessAgent, summary: "Take no new work on a node (admin or agent)", resp: api.Node{}, handler: s.nodeAction("cordon")},
		{method: "POST", path: "/v1/nodes/{name}/uncordon", access: accessAgent, summary: "Take work again (admin or agent)", resp: api.Node{}, handler: s.nodeAction("uncordon")},
		{method: "POST", path: "/v1/nodes/{name}/drain", access: accessAdmin, summary: "Cordon and requeue the node's gangs", resp: api.Node{}, handler: s.nodeAction("drain")},
		{method: "DELETE", path: "/v1/nodes/{name}", access: accessAdmin, summary: "Forget a node", resp: api.Status{}, handler: s.deleteNode},

		{method: "POST", path: "/v1/nodes/register", access: accessAgent, summary: "Agent: register a node", req: api.NodeRegistration{}, resp: api.Registration{}, handler: s.register},
		{method: "POST", path: "/v1/nodes/{name}/heartbeat", access: accessAgent, summary: "Agent: renew the node's lease (410: register again)", req: api.Heartbeat{}, resp: api.HeartbeatResponse{}, handler: s.heartbeat},
		{method: "GET", path: "/v1/nodes/{name}/assignments", access: accessAgent, summary: "Agent: stream of the node's desired assignments (server-sent events)", resp: api.AssignmentSet{}, handler: s.assignments, stream: true},
		{method: "POST", path: "/v1/nodes/{name}/reports", access: accessAgent, summary: "Agent: rank started/exited/checkpoint reports", req: api.RankReports{}, resp: api.Status{}, handler: s.reports},
		{method: "POST", path: "/v1/nodes/{name}/logs", access: accessAgent, summary: "Agent: upload a chunk of a rank's output", req: api.LogChunk{}, resp: api.Status{}, handler: s.uploadLog},

		{method: "GET", path: "/v1/events", access: accessUser, summary: "Recent events (?kind=&name=)", resp: api.List[api.Event]{}, handler: s.listEvents},
		{method: "GET", path: "/v1/watch/jobs", access: accessUser, summary: "Stream of job changes (server-sent events)", resp: api.WatchEvent[api.Job]{}, handler: s.watchJobs, stream: true},
		{method: "GET", path: "/v1/watch/nodes", access: accessUser, summary: "Stream of node changes (server-sent events)", resp: api.WatchEvent[api.Node]{}, handler: s.watchNodes, stream: true},
	}, s.deploymentRoutes()...)
}

// Whoami says who the caller is.
type Whoami struct {
	Role   api.Role `json:"role"`
	Tenant string   `json:"tenant,omitempty"`
	Token  string   `json:"token"`
}

// ClusterInfo summarises the control plane.
type ClusterInfo struct {
	Replica   string `json:"replica"`
	Leader    bool   `json:"leader"`
	Revision  int64  `json:"revision"`
	Nodes     int    `json:"nodes"`
	NodesUp   int    `json:"nodesUp"`
	GPUs      int    `json:"gpus"`
	GPUsAlloc int    `json:"gpusAllocated"`
	Jobs      int    `json:"jobs"`
	Fabric    string `json:"fabric,omitempty"`
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, 200, api.Status{Message: "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, 200, s.clusterInfo())
}

func (s *Server) whoami(w http.ResponseWriter, r *http.Request) error {
	p := principalOf(r)
	return writeJSON(w, 200, Whoami{Role: p.role, Tenant: p.tenant, Token: p.token})
}

func (s *Server) cluster(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, 200, s.clusterInfo())
}

func (s *Server) clusterInfo() ClusterInfo {
	s.st.mu.RLock()
	defer s.st.mu.RUnlock()
	ci := ClusterInfo{Replica: s.cfg.ID, Leader: s.IsLeader(), Revision: s.st.rev, Nodes: len(s.st.nodes), Jobs: len(s.st.jobs)}
	alloc := s.st.allocated()
	for name, n := range s.st.nodes {
		if _, ok := s.st.alive[name]; ok {
			ci.NodesUp++
		}
		ci.GPUs += n.node.Status.GPUs
		ci.GPUsAlloc += alloc[name]
	}
	if s.cfg.Fabric != nil {
		ci.Fabric = s.cfg.Fabric.Name
	}
	return ci
}
