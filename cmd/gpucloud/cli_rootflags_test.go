package main

import (
	"path/filepath"
	"strings"
	"testing"
)

// The connection flags work before the subcommand as well as after it.
func TestConnFlagsBeforeTheSubcommand(t *testing.T) {
	dir := isolate(t)
	url, token := startTestServer(t, filepath.Join(dir, "data"))
	for _, args := range [][]string{
		{"--server", url, "--token", token, "get", "nodes"},
		{"--server=" + url, "get", "--token", token, "nodes"},
		{"get", "nodes", "--server", url, "--token", token},
	} {
		_, errOut, err := cli(t, args...)
		if err != nil || !strings.Contains(errOut, "No nodes") {
			t.Errorf("gpucloud %s: %v %s", strings.Join(args, " "), err, errOut)
		}
	}
}
