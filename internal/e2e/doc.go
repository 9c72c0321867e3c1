// Package e2e holds end-to-end tests of the gpucloud binary: they build it,
// run `gpucloud up` in a temporary home, and drive it with the CLI as a
// user would.
package e2e
