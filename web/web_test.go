package web

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"
)

func get(t *testing.T, h http.Handler, method, path string, hdr map[string]string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func TestServesPageAndAssets(t *testing.T) {
	h := Handler()
	for _, tc := range []struct {
		path, ctype, contains string
	}{
		{"/", "text/html; charset=utf-8", `<meta charset="utf-8">`},
		{"/index.html", "text/html; charset=utf-8", `<script type="module" src="app.js">`},
		{"/app.js", "text/javascript; charset=utf-8", "/v1/watch/jobs"},
		{"/heatmap.js", "text/javascript; charset=utf-8", "putImageData"},
		{"/hostlist.js", "text/javascript; charset=utf-8", "export function expandHostlist"},
		{"/fabric.js", "text/javascript; charset=utf-8", "export function fromDocument"},
		{"/app.css", "text/css; charset=utf-8", ".map-wrap"},
		{"/favicon.svg", "image/svg+xml", "<svg"},
	} {
		resp := get(t, h, "GET", tc.path, nil)
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			t.Errorf("GET %s: %d", tc.path, resp.StatusCode)
			continue
		}
		if got := resp.Header.Get("Content-Type"); got != tc.ctype {
			t.Errorf("GET %s: Content-Type %q, want %q", tc.path, got, tc.ctype)
		}
		if !strings.Contains(string(body), tc.contains) {
			t.Errorf("GET %s: body lacks %q", tc.path, tc.contains)
		}
		for _, k := range []string{"Content-Security-Policy", "X-Content-Type-Options", "ETag", "Cache-Control"} {
			if resp.Header.Get(k) == "" {
				t.Errorf("GET %s: no %s header", tc.path, k)
			}
		}
	}
}

func TestConditionalGetAndHead(t *testing.T) {
	h := Handler()
	first := get(t, h, "GET", "/app.js", nil)
	etag := first.Header.Get("ETag")
	if etag == "" {
		t.Fatal("no ETag")
	}
	if resp := get(t, h, "GET", "/app.js", map[string]string{"If-None-Match": etag}); resp.StatusCode != http.StatusNotModified {
		t.Errorf("If-None-Match with the current ETag: %d, want 304", resp.StatusCode)
	}
	if resp := get(t, h, "GET", "/app.js", map[string]string{"If-None-Match": `"stale"`}); resp.StatusCode != 200 {
		t.Errorf("If-None-Match with another ETag: %d, want 200", resp.StatusCode)
	}
	if other := get(t, h, "GET", "/app.css", nil).Header.Get("ETag"); other == etag {
		t.Errorf("app.js and app.css share ETag %s", etag)
	}
	resp := get(t, h, "HEAD", "/", nil)
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || len(body) != 0 {
		t.Errorf("HEAD /: %d with %d body bytes", resp.StatusCode, len(body))
	}
}

func TestRejectsOtherPathsAndMethods(t *testing.T) {
	h := Handler()
	for _, path := range []string{"/nope", "/static/app.js", "/v1/jobs", "/../web.go", "/web.go"} {
		if resp := get(t, h, "GET", path, nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", path, resp.StatusCode)
		}
	}
	for _, m := range []string{"POST", "PUT", "DELETE"} {
		resp := get(t, h, m, "/", nil)
		if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s /: %d Allow=%q", m, resp.StatusCode, resp.Header.Get("Allow"))
		}
	}
}

// The page must work without a network: nothing it ships may load from
// another origin.
func TestNoExternalResources(t *testing.T) {
	ext := regexp.MustCompile(`(?i)(https?:)?//[a-z0-9.-]+\.[a-z]{2,}`)
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, _ := static.ReadFile(p)
		// An SVG namespace is a name, not a fetch.
		text := strings.ReplaceAll(string(b), `xmlns="http://www.w3.org/2000/svg"`, "")
		for _, m := range ext.FindAllString(text, -1) {
			t.Errorf("%s refers to %s", p, m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	csp := get(t, Handler(), "GET", "/", nil).Header.Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "connect-src 'self'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
}
