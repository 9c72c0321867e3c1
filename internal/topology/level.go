package topology

import "fmt"

// Level is a rung of the datacenter hierarchy. Levels are ordered bottom-up so
// that "the lowest level where one domain holds the gang" is a loop that counts
// upwards.
type Level uint8

const (
	LevelGPU Level = iota
	LevelNVLink
	LevelNode
	LevelLeaf    // nodes that reach each other through one leaf switch per rail
	LevelBlock   // leaves under one group of spine switches
	LevelPod     // blocks under one group of core switches (4-tier trees)
	LevelCluster // one fabric
	LevelZone
	LevelRegion
	numLevels
)

var levelNames = [numLevels]string{"gpu", "nvlink", "node", "leaf", "block", "pod", "cluster", "zone", "region"}

func (l Level) String() string {
	if l < numLevels {
		return levelNames[l]
	}
	return fmt.Sprintf("level(%d)", uint8(l))
}

// ParseLevel turns a level name ("leaf", "block", ...) into a Level.
func ParseLevel(s string) (Level, error) {
	for i, n := range levelNames {
		if n == s {
			return Level(i), nil
		}
	}
	return 0, fmt.Errorf("unknown level %q (want one of gpu, nvlink, node, leaf, block, pod, cluster, zone, region)", s)
}

// IsSwitchLevel reports whether domains of this level sit above nodes in the
// switch tree (leaf and up).
func (l Level) IsSwitchLevel() bool { return l >= LevelLeaf && l < numLevels }

// MarshalText makes levels read as names in YAML and JSON.
func (l Level) MarshalText() ([]byte, error) { return []byte(l.String()), nil }

// UnmarshalText parses a level name.
func (l *Level) UnmarshalText(b []byte) error {
	v, err := ParseLevel(string(b))
	if err != nil {
		return err
	}
	*l = v
	return nil
}
