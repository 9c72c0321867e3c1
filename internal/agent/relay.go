package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"gpucloud/internal/agent/launch"
	"gpucloud/internal/api"
	"gpucloud/internal/client"
)

// The relay ships each rank's log file to the server in chunks of whole
// lines, tagged with their byte offset in the rank's output: a chunk sent
// twice (an answer lost, an agent restarted) lands on the same key.

const (
	maxChunk      = 64 << 10
	relayInterval = 200 * time.Millisecond
	// flushWait bounds how long an exit report waits for its rank's last
	// log lines to reach the server.
	flushWait = 2 * time.Second
)

// logFlush asks the relay loop to ship the logs of ranks that ended, up to
// their last byte, before their exits are reported: a job seen Succeeded
// then has all its output on the server.
type logFlush struct {
	ended map[tailKey]bool
	done  chan struct{}
}

// shipLogsOf flushes the logs of the ranks whose exits batch reports,
// waiting at most flushWait (a server that refuses logs must not hold up
// exits).
func (a *Agent) shipLogsOf(ctx context.Context, batch []api.RankEvent) {
	ended := map[tailKey]bool{}
	for _, e := range batch {
		if e.Event == api.RankExited {
			ended[tailKey{launch.Key{Job: e.Job, Generation: e.Generation}, e.Rank}] = true
		}
	}
	if len(ended) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, flushWait)
	defer cancel()
	req := logFlush{ended: ended, done: make(chan struct{})}
	select {
	case a.logFlush <- req:
	case <-ctx.Done():
		return
	}
	select {
	case <-req.done:
	case <-ctx.Done():
	}
}

type tailKey struct {
	launch.Key
	rank int
}

// tailer follows one rank's log across rotations.
type tailer struct {
	path  string // the current log file
	state string // where the shipped position is kept
	f     *os.File
	ino   uint64
	pos   int64  // read position in f
	off   int64  // offset in the rank's output of buf[0]
	buf   []byte // read, not yet shipped
	done  bool
}

// tailState is what a tailer keeps on disk.
type tailState struct {
	Ino uint64 `json:"ino"`
	Pos int64  `json:"pos"` // in the file with Ino: the first byte not shipped
	Off int64  `json:"off"`
}

func (a *Agent) relayLoop(ctx context.Context) {
	tails := map[tailKey]*tailer{}
	defer func() {
		for _, t := range tails {
			t.close()
		}
	}()
	tick := time.NewTicker(relayInterval)
	defer tick.Stop()
	for {
		var flush *logFlush
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case req := <-a.logFlush:
			flush = &req
		}
		a.relayPass(ctx, tails, flush)
		if flush != nil {
			close(flush.done)
		}
	}
}

// relayPass ships what every rank's log holds that the server lacks; the
// ranks flush names are shipped to their end even if the launcher does
// not say they finished yet (their exit is about to be reported).
func (a *Agent) relayPass(ctx context.Context, tails map[tailKey]*tailer, flush *logFlush) {
	seen := map[tailKey]bool{}
	for _, k := range a.l.Keys() {
		st, ok := a.l.Status(k)
		if !ok {
			continue
		}
		for _, r := range st {
			if r.State == "pending" {
				continue
			}
			tk := tailKey{k, r.Rank}
			seen[tk] = true
			t := tails[tk]
			if t == nil {
				path := a.l.LogPath(k, r.Rank)
				t = &tailer{path: path, state: filepath.Join(filepath.Dir(path), "relay.json")}
				t.load()
				tails[tk] = t
			}
			if !t.done {
				a.ship(ctx, tk, t, r.State == "finished" || (flush != nil && flush.ended[tk]))
			}
		}
	}
	for tk, t := range tails {
		if !seen[tk] {
			t.close()
			delete(tails, tk)
		}
	}
}

// ship reads what is new and uploads it; ended says the rank is gone, so
// a last line without a newline goes too and the tailer finishes.
func (a *Agent) ship(ctx context.Context, tk tailKey, t *tailer, ended bool) {
	for ctx.Err() == nil {
		eof, err := t.fill()
		if err != nil {
			if !errors.Is(err, os.ErrNotExist) {
				a.log.Warn("log relay", "file", t.path, "err", err)
			}
			if ended {
				t.done = true
			}
			return
		}
		n := len(t.buf)
		if !ended || !eof {
			// Whole lines only, unless a line outgrows a chunk.
			if i := bytes.LastIndexByte(t.buf[:min(n, maxChunk)], '\n'); i >= 0 {
				n = i + 1
			} else if n < maxChunk {
				n = 0
			}
		}
		n = min(n, maxChunk)
		if n == 0 {
			if ended && eof {
				t.done = true
				t.close()
			}
			return
		}
		err = a.c.UploadLog(ctx, a.cfg.NodeName, &api.LogChunk{Job: tk.Job, Generation: tk.Generation, Rank: tk.rank, Offset: t.off, Data: t.buf[:n]})
		var ae *client.Error
		if errors.As(err, &ae) && ae.Code >= 400 && ae.Code < 500 {
			// The job is gone or moved on: nobody will read this.
			t.done = true
			t.close()
			return
		}
		if err != nil {
			return // next tick
		}
		t.buf = t.buf[n:]
		t.off += int64(n)
		t.save()
		if eof && len(t.buf) == 0 && !ended {
			return
		}
	}
}

// fill reads what the file holds beyond pos into buf (up to a chunk's
// worth); it follows a rotation once the old file is read to its end.
func (t *tailer) fill() (eof bool, err error) {
	if t.f == nil {
		if err := t.open(); err != nil {
			return true, err
		}
	}
	for len(t.buf) < maxChunk {
		b := make([]byte, maxChunk-len(t.buf))
		n, err := t.f.ReadAt(b, t.pos)
		t.buf = append(t.buf, b[:n]...)
		t.pos += int64(n)
		if err == nil {
			continue
		}
		if err != io.EOF {
			return false, err
		}
		// At the end of this file: has the shim rotated it?
		fi, serr := os.Stat(t.path)
		if serr != nil || inode(fi) == t.ino {
			return true, nil
		}
		// Rotated: read what the old file got after our last read, then
		// go on with the new one.
		if n2, _ := t.f.ReadAt(b[:cap(b)], t.pos); n2 > 0 {
			t.buf = append(t.buf, b[:n2]...)
			t.pos += int64(n2)
			continue
		}
		t.f.Close()
		t.f, t.pos = nil, 0
		if err := t.open(); err != nil {
			return true, err
		}
	}
	return false, nil
}

// open opens the current log file; after a restart it resumes in the file
// the saved position belongs to, which may have been rotated meanwhile.
func (t *tailer) open() error {
	f, err := os.Open(t.path)
	if err != nil {
		return err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return err
	}
	t.f, t.ino = f, inode(fi)
	return nil
}

func (t *tailer) load() {
	b, err := os.ReadFile(t.state)
	if err != nil {
		return
	}
	var s tailState
	if json.Unmarshal(b, &s) != nil {
		return
	}
	t.off = s.Off
	// Find the file that has the saved inode: the current log, or one the
	// shim rotated while no agent ran.
	files, _ := filepath.Glob(filepath.Join(filepath.Dir(t.path), "output*.log"))
	for _, p := range files {
		if fi, err := os.Stat(p); err == nil && inode(fi) == s.Ino {
			if f, err := os.Open(p); err == nil {
				t.f, t.ino, t.pos = f, s.Ino, s.Pos
			}
			return
		}
	}
}

func (t *tailer) save() {
	b, _ := json.Marshal(tailState{Ino: t.ino, Pos: t.pos - int64(len(t.buf)), Off: t.off})
	os.WriteFile(t.state, b, 0o644)
}

func (t *tailer) close() {
	if t.f != nil {
		t.f.Close()
		t.f = nil
	}
}

func inode(fi os.FileInfo) uint64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Ino
	}
	return 0
}
