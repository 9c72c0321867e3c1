// Command modelserver is a stand-in for an inference server (vLLM, TGI) in
// the serving tests: a real HTTP server that answers slowly, as a model
// does, on the port the platform gives it in PORT.
//
//	POST /v1/completions  {"prompt": "...", "stream": false}
//	GET  /health          200 once the "model" is loaded, 503 before
//
// Environment: PORT (required), MODEL_DELAY (time per answer, default
// 50ms), MODEL_LOAD (time before /health passes, default 0), MODEL_BATCH
// (requests served at once; more wait, as on a GPU with a fixed batch;
// default 0: no limit), MODEL_TOKENS (events of a streamed answer, default
// 4), MODEL_REVISION (echoed in answers). On SIGTERM it stops taking
// connections, finishes the requests it holds and exits 0.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "modelserver:", err)
		os.Exit(1)
	}
}

func envDuration(k string, def time.Duration) (time.Duration, error) {
	v := os.Getenv(k)
	if v == "" {
		return def, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", k, err)
	}
	return d, nil
}

func envInt(k string, def int) (int, error) {
	v := os.Getenv(k)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", k, err)
	}
	return n, nil
}

type request struct {
	Prompt string `json:"prompt"`
	Stream bool   `json:"stream"`
}

type answer struct {
	Text     string `json:"text"`
	Revision string `json:"revision"`
	Replica  string `json:"replica"`
	Index    int    `json:"index,omitempty"`
}

func run() error {
	port := os.Getenv("PORT")
	if port == "" {
		return fmt.Errorf("PORT is not set")
	}
	delay, err := envDuration("MODEL_DELAY", 50*time.Millisecond)
	if err != nil {
		return err
	}
	load, err := envDuration("MODEL_LOAD", 0)
	if err != nil {
		return err
	}
	batch, err := envInt("MODEL_BATCH", 0)
	if err != nil {
		return err
	}
	tokens, err := envInt("MODEL_TOKENS", 4)
	if err != nil {
		return err
	}
	rev := os.Getenv("MODEL_REVISION")
	replica := fmt.Sprintf("pid-%d", os.Getpid())

	var loaded atomic.Bool
	time.AfterFunc(load, func() { loaded.Store(true) })
	var slots chan struct{}
	if batch > 0 {
		slots = make(chan struct{}, batch)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		if !loaded.Load() {
			http.Error(w, "loading", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ok")
	})
	mux.HandleFunc("POST /v1/completions", func(w http.ResponseWriter, r *http.Request) {
		var req request
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
			return
		}
		if slots != nil {
			select {
			case slots <- struct{}{}:
				defer func() { <-slots }()
			case <-r.Context().Done():
				return
			}
		}
		if !req.Stream {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
			w.Header().Set("Content-Type", "application/json")
			json.NewEncoder(w).Encode(answer{Text: "echo: " + req.Prompt, Revision: rev, Replica: replica})
			return
		}
		w.Header().Set("Content-Type", "text/event-stream")
		w.Header().Set("Cache-Control", "no-cache")
		w.WriteHeader(200)
		for i := range tokens {
			select {
			case <-time.After(delay / time.Duration(max(tokens, 1))):
			case <-r.Context().Done():
				return
			}
			b, _ := json.Marshal(answer{Text: fmt.Sprintf("tok%d", i), Revision: rev, Replica: replica, Index: i})
			fmt.Fprintf(w, "data: %s\n\n", b)
			w.(http.Flusher).Flush()
		}
		io.WriteString(w, "data: [DONE]\n\n")
	})

	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", port))
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return srv.Shutdown(shutdown)
}
