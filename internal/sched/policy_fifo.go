package sched

// fifoProfile: strict submit order; the head blocks everyone.
func fifoProfile() profile {
	return profile{name: PolicyFIFO, order: submitOrder{}, strict: true, grow: true}
}
