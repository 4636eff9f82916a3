// Package machine describes the machine a benchmark runs on, for the
// setup line of its report: host name, CPUs and load average, read from
// /proc ("?" or 0 where it is missing).
package machine

import (
	"os"
	"strings"
)

// LoadAvg is the 1, 5 and 15 minute load averages, e.g. "0.52 0.61 0.70".
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// NumCPU is the number of processors /proc/cpuinfo lists.
func NumCPU() int {
	b, _ := os.ReadFile("/proc/cpuinfo")
	return strings.Count(string(b), "processor\t:")
}

// CPUModel is the first "model name" of /proc/cpuinfo.
func CPUModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "?"
	}
	for _, l := range strings.Split(string(b), "\n") {
		if name, value, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(name) == "model name" {
			return strings.TrimSpace(value)
		}
	}
	return "?"
}

// Host is the host name.
func Host() string {
	h, _ := os.Hostname()
	return h
}
