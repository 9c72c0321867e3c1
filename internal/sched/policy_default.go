package sched

// defaultProfile: fair share between queues and tenants, priority inside
// them, reclaim of guaranteed quota, priority preemption, topology-aware
// placement and EASY backfill.
func defaultProfile() profile {
	return profile{name: PolicyDefault, order: priorityOrder{}, fairShare: true, backfill: true,
		actions: []action{reclaimAction{}, preemptAction{}}, grow: true}
}
