package sched

// drfProfile: queues, then tenants, by weighted dominant share (guaranteed
// quota first); whatever fits starts; guaranteed quota is reclaimed.
func drfProfile() profile {
	return profile{name: PolicyDRF, order: submitOrder{}, fairShare: true, actions: []action{reclaimAction{}}, grow: true}
}
