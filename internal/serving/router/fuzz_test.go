package router

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// The request-target sent to a replica is always a clean origin-form
// target ("/" then no spaces or control bytes) that names the
// path after /v1/deployments/NAME, whatever the client sent: a request
// line is where request smuggling starts.
func FuzzRequestTarget(f *testing.F) {
	for _, s := range []string{"/v1/completions", "", "/a%2Fb?x=1", "/%zz", "/a b", "/a\r\nHost: evil", "?q", "/../x", "//x", "/a#frag", "/ü"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, rest string) {
		u, err := url.ParseRequestURI("/v1/deployments/m" + rest)
		if err != nil {
			return // the server would refuse the request line
		}
		if !strings.HasPrefix(u.Path, "/v1/deployments/m") {
			return
		}
		if p := u.Path[len("/v1/deployments/m"):]; p != "" && p[0] != '/' {
			return // another deployment's name ("/v1/deployments/mx")
		}
		r := &http.Request{URL: u}
		path, raw := upstreamPath(r, len("/v1/deployments/m"))
		if !strings.HasPrefix(path, "/") {
			t.Fatalf("path %q", path)
		}
		if want := u.Path[len("/v1/deployments/m"):]; want != "" && path != want {
			t.Fatalf("path %q, want %q", path, want)
		}
		target, ok := requestTarget(path, raw, u.RawQuery)
		if !ok {
			if !strings.ContainsAny(u.RawQuery, " \x7f") {
				t.Fatalf("refused %q (path %q raw %q query %q)", rest, path, raw, u.RawQuery)
			}
			return
		}
		if strings.ContainsAny(target, " \x7f") {
			t.Fatalf("target %q", target)
		}
		// The replica sees the same path the client named.
		back, err := url.ParseRequestURI(target)
		if err != nil {
			t.Fatalf("target %q does not parse: %v", target, err)
		}
		if back.Path != path {
			t.Fatalf("target %q parses to path %q, want %q", target, back.Path, path)
		}
	})
}
