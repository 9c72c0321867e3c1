package sched

// backfillProfile: submit order with EASY backfill: the first job that
// cannot start gets a reservation; later jobs start when they do not delay
// it.
func backfillProfile() profile {
	return profile{name: PolicyBackfill, order: submitOrder{}, backfill: true, grow: true}
}
