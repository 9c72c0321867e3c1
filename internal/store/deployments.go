package store

// DeploymentsKey holds inference deployments: deployments/<name>. Names
// are global (they are the router's paths), not per tenant.
const DeploymentsKey = Prefix + "deployments/"
