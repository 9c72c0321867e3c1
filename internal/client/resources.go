package client

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"

	"gpucloud/internal/api"
)

// Submit sends a job. Without metadata.id the client picks one, so the
// submission can be retried (across replicas, after a lost answer)
// without making a duplicate: a 409 for an ID this call sent means an
// earlier attempt got through, and the stored job is returned.
func (c *Client) Submit(ctx context.Context, j *api.Job) (*api.Job, error) {
	cp := *j
	if cp.Metadata.ID == "" {
		cp.Metadata.ID = NewJobID()
	}
	var out api.Job
	err := c.Do(ctx, "POST", "/v1/jobs", &cp, &out)
	if IsCode(err, http.StatusConflict) && j.Metadata.ID == "" {
		return c.Job(ctx, cp.Metadata.ID)
	}
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// SubmitDocument sends a job written as YAML or JSON, as is.
func (c *Client) SubmitDocument(ctx context.Context, doc []byte) (*api.Job, error) {
	var out api.Job
	if err := c.Do(ctx, "POST", "/v1/jobs", doc, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Job reads one job.
func (c *Client) Job(ctx context.Context, id string) (*api.Job, error) {
	var out api.Job
	if err := c.Do(ctx, "GET", "/v1/jobs/"+id, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// JobFilter narrows a job listing.
type JobFilter struct {
	Tenant, Queue, Name string
	Phase               api.Phase
	Limit               int
	After               string
}

// Jobs lists jobs.
func (c *Client) Jobs(ctx context.Context, f JobFilter) (*api.List[api.Job], error) {
	var out api.List[api.Job]
	lim := ""
	if f.Limit > 0 {
		lim = strconv.Itoa(f.Limit)
	}
	err := c.Do(ctx, "GET", "/v1/jobs"+q("tenant", f.Tenant, "queue", f.Queue, "name", f.Name, "phase", string(f.Phase), "limit", lim, "after", f.After), nil, &out)
	return &out, err
}

// Cancel cancels a job. A retry that finds the job already Cancelled
// (the first attempt's answer was lost) returns it without error.
func (c *Client) Cancel(ctx context.Context, id string) (*api.Job, error) {
	var out api.Job
	err := c.Do(ctx, "POST", "/v1/jobs/"+id+"/cancel", nil, &out)
	if IsCode(err, http.StatusConflict) {
		if j, gerr := c.Job(ctx, id); gerr == nil && j.Status.Phase == api.PhaseCancelled {
			return j, nil
		}
	}
	if err != nil {
		return nil, err
	}
	return &out, nil
}

// DeleteJob deletes a finished job.
func (c *Client) DeleteJob(ctx context.Context, id string) error {
	return c.Do(ctx, "DELETE", "/v1/jobs/"+id, nil, nil)
}

// Logs opens a job's output (rank < 0: all ranks, tagged).
func (c *Client) Logs(ctx context.Context, id string, rank int, follow bool) (io.ReadCloser, error) {
	r := ""
	if rank >= 0 {
		r = strconv.Itoa(rank)
	}
	f := ""
	if follow {
		f = "true"
	}
	resp, err := c.Stream(ctx, "/v1/jobs/"+id+"/logs"+q("rank", r, "follow", f))
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// JobEvents lists a job's events.
func (c *Client) JobEvents(ctx context.Context, id string) ([]api.Event, error) {
	var out api.List[api.Event]
	err := c.Do(ctx, "GET", "/v1/jobs/"+id+"/events", nil, &out)
	return out.Items, err
}

// Events lists recent events.
func (c *Client) Events(ctx context.Context, kind, name string) ([]api.Event, error) {
	var out api.List[api.Event]
	err := c.Do(ctx, "GET", "/v1/events"+q("kind", kind, "name", name), nil, &out)
	return out.Items, err
}

// WatchJobs calls fn with every job change (first the current jobs as
// ADDED) until ctx ends, the stream breaks, or fn returns an error.
func (c *Client) WatchJobs(ctx context.Context, fn func(api.WatchEvent[api.Job]) error) error {
	resp, err := c.Stream(ctx, "/v1/watch/jobs")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return SSE(resp.Body, func(_ string, data []byte) error {
		var ev api.WatchEvent[api.Job]
		if err := json.Unmarshal(data, &ev); err != nil {
			return err
		}
		return fn(ev)
	})
}

// Tenants, tokens, queues.

// CreateTenant makes a tenant (admin).
func (c *Client) CreateTenant(ctx context.Context, t *api.Tenant) (*api.Tenant, error) {
	var out api.Tenant
	if err := c.Do(ctx, "POST", "/v1/tenants", t, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Tenants lists tenants.
func (c *Client) Tenants(ctx context.Context) ([]api.Tenant, error) {
	var out api.List[api.Tenant]
	err := c.Do(ctx, "GET", "/v1/tenants", nil, &out)
	return out.Items, err
}

// CreateToken makes a token (admin).
func (c *Client) CreateToken(ctx context.Context, req api.TokenRequest) (*api.TokenResponse, error) {
	var out api.TokenResponse
	if err := c.Do(ctx, "POST", "/v1/tokens", req, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// PutQueue creates or replaces a queue (admin).
func (c *Client) PutQueue(ctx context.Context, qu *api.Queue) (*api.Queue, error) {
	var out api.Queue
	if err := c.Do(ctx, "PUT", "/v1/queues/"+qu.Metadata.Name, qu, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Queues lists queues.
func (c *Client) Queues(ctx context.Context) ([]api.Queue, error) {
	var out api.List[api.Queue]
	err := c.Do(ctx, "GET", "/v1/queues", nil, &out)
	return out.Items, err
}

// Nodes.

// Nodes lists nodes.
func (c *Client) Nodes(ctx context.Context) ([]api.Node, error) {
	var out api.List[api.Node]
	err := c.Do(ctx, "GET", "/v1/nodes", nil, &out)
	return out.Items, err
}

// Node reads a node.
func (c *Client) Node(ctx context.Context, name string) (*api.Node, error) {
	var out api.Node
	if err := c.Do(ctx, "GET", "/v1/nodes/"+name, nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// NodeAction cordons, uncordons or drains a node (admin).
func (c *Client) NodeAction(ctx context.Context, name, action, reason string) (*api.Node, error) {
	var out api.Node
	if err := c.Do(ctx, "POST", "/v1/nodes/"+name+"/"+action+q("reason", reason), nil, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// The agent protocol.

// Register registers a node.
func (c *Client) Register(ctx context.Context, r *api.NodeRegistration) (*api.Registration, error) {
	var out api.Registration
	if err := c.Do(ctx, "POST", "/v1/nodes/register", r, &out); err != nil {
		return nil, err
	}
	return &out, nil
}

// Heartbeat renews a node's lease; a 410 error means: register again.
func (c *Client) Heartbeat(ctx context.Context, node string, hb *api.Heartbeat) error {
	return c.Do(ctx, "POST", "/v1/nodes/"+node+"/heartbeat", hb, nil)
}

// Report sends rank events.
func (c *Client) Report(ctx context.Context, node string, evs ...api.RankEvent) error {
	return c.Do(ctx, "POST", "/v1/nodes/"+node+"/reports", api.RankReports{Reports: evs}, nil)
}

// UploadLog sends a chunk of a rank's output.
func (c *Client) UploadLog(ctx context.Context, node string, chunk *api.LogChunk) error {
	return c.Do(ctx, "POST", "/v1/nodes/"+node+"/logs", chunk, nil)
}

// WatchAssignments calls fn with the node's whole desired state, first at
// once and then at every change, until ctx ends or the stream breaks
// (then the caller reconnects; every message is complete, so nothing is
// lost by reconnecting).
func (c *Client) WatchAssignments(ctx context.Context, node string, fn func(api.AssignmentSet) error) error {
	resp, err := c.Stream(ctx, "/v1/nodes/"+node+"/assignments")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return SSE(resp.Body, func(_ string, data []byte) error {
		var set api.AssignmentSet
		if err := json.Unmarshal(data, &set); err != nil {
			return err
		}
		return fn(set)
	})
}

// Whoami tells the caller's role.
func (c *Client) Whoami(ctx context.Context) (map[string]any, error) {
	var out map[string]any
	err := c.Do(ctx, "GET", "/v1/whoami", nil, &out)
	return out, err
}
