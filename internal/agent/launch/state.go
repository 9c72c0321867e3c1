package launch

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"
)

const stateVersion = 1

// stateFile is what the launcher keeps on disk: every gang it has started
// and not yet forgotten, with the identity of each rank's shim.
type stateFile struct {
	Version int           `json:"version"`
	BootID  string        `json:"bootId"`
	Gangs   []*gangRecord `json:"gangs"`
}

type gangRecord struct {
	Spec  Spec          `json:"spec"`
	Ranks []*rankRecord `json:"ranks"`
	// Failure is why the gang is being torn down (a rank failed, the
	// control plane took it away), so that a restarted agent finishes it.
	Failure string `json:"tornDown,omitempty"`
	// Ended is when the last rank ended; the record is kept (and the
	// generation never started again) for Config.Retain after that.
	Ended time.Time `json:"ended,omitzero"`
}

// Rank states.
const (
	rankPending  = "pending"  // recorded, not started
	rankRunning  = "running"  // its shim runs
	rankFinished = "finished" // ended; Exit says how
)

type rankRecord struct {
	Rank  int          `json:"rank"`
	State string       `json:"state"`
	Shim  procIdentity `json:"shim,omitzero"`
	Exit  *ExitStatus  `json:"exit,omitempty"`
	// Reason is the reported reason: the exit's own, or why the launcher
	// ended it (gang torn down, lost).
	Reason string `json:"reason,omitempty"`
}

func loadState(path string) (*stateFile, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return &stateFile{Version: stateVersion}, nil
	}
	if err != nil {
		return nil, err
	}
	var st stateFile
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, fmt.Errorf("%s: %w (move it aside to start afresh; ranks it lists are then not adopted)", path, err)
	}
	if st.Version != stateVersion {
		return nil, fmt.Errorf("%s: state version %d, this agent reads %d", path, st.Version, stateVersion)
	}
	return &st, nil
}
