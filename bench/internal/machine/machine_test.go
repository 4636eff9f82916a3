package machine

import (
	"os"
	"strings"
	"testing"
)

func TestReadsProc(t *testing.T) {
	if _, err := os.Stat("/proc/cpuinfo"); err != nil {
		t.Skip("no /proc/cpuinfo here")
	}
	if n := NumCPU(); n < 1 {
		t.Errorf("NumCPU = %d", n)
	}
	if l := LoadAvg(); len(strings.Fields(l)) != 3 {
		t.Errorf("LoadAvg = %q, want three figures", l)
	}
	if m := CPUModel(); m == "" {
		t.Error("CPUModel is empty")
	}
}
