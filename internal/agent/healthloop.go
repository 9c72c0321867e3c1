package agent

import (
	"context"
	"slices"
	"strings"
	"time"

	"gpucloud/internal/client"
)

// cordonPrefix marks the cordons the agent placed, so that it lifts only
// its own: a cordon an administrator set stays.
const cordonPrefix = "agent health check: "

// healthLoop runs the checks; a failure cordons the node with the reason,
// and recovery lifts the agent's own cordon. The unhealthy GPUs go out with
// every heartbeat.
func (a *Agent) healthLoop(ctx context.Context) {
	t := time.NewTimer(0)
	defer t.Stop()
	warned := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r := a.checker.Check(ctx)
		if ctx.Err() != nil {
			return
		}
		reason := r.Reason()
		a.mu.Lock()
		changed := reason != a.reason || !slices.Equal(a.unhealthy, r.UnhealthyGPUs())
		a.unhealthy, a.reason = r.UnhealthyGPUs(), reason
		a.mu.Unlock()
		if changed {
			if reason != "" {
				a.log.Error("node unhealthy", "reason", reason)
			} else {
				a.log.Info("node healthy")
			}
		}
		if err := a.applyCordon(ctx, reason); err != nil {
			if client.IsCode(err, 403) {
				if !warned {
					a.log.Warn("this agent's token cannot cordon the node; the server sees the unhealthy GPUs only", "err", err)
					warned = true
				}
			} else {
				a.log.Warn("cordon", "err", err)
			}
		}
		t.Reset(a.cfg.HealthInterval)
	}
}

// applyCordon makes the node's cordon match the health: cordoned with the
// reason when a check fails, the agent's own cordon lifted when none does.
func (a *Agent) applyCordon(ctx context.Context, reason string) error {
	n, err := a.c.Node(ctx, a.cfg.NodeName)
	if err != nil {
		return err
	}
	ours := n.Spec.Cordoned && strings.HasPrefix(n.Status.Reason, cordonPrefix)
	switch {
	case reason != "" && (!n.Spec.Cordoned || ours) && n.Status.Reason != cordonPrefix+reason:
		_, err = a.c.NodeAction(ctx, a.cfg.NodeName, "cordon", cordonPrefix+reason)
	case reason == "" && ours && !n.Spec.Draining:
		_, err = a.c.NodeAction(ctx, a.cfg.NodeName, "uncordon", "")
	}
	return err
}
