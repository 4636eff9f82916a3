package integration

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// footprintCaddyfile is README's setup: the s360 block with a 1 GiB bound
// and the website's files; polls at their defaults.
const footprintCaddyfile = `{
	admin %[2]s
}
http://%[1]s {
	encode zstd gzip
	s360 {
		upstream SIMURL
		operator {env.S360_OPERATOR}
		secret   {env.S360_SECRET}
		shop     SIMURL
		storage  {env.XDG_DATA_HOME}/store
		max_size 1GiB
	}
	root * {env.XDG_DATA_HOME}
	file_server
}
`

// statusKiB reads the named fields of /proc/<pid>/status, in KiB.
func statusKiB(t *testing.T, pid int) map[string]int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if f := strings.Fields(v); ok && len(f) == 2 && f[1] == "kB" {
			out[k], _ = strconv.ParseInt(f[0], 10, 64)
		}
	}
	return out
}

// waitStatus polls /proc/<pid>/status until ok holds, and fails the test
// with the last figures after timeout.
func waitStatus(t *testing.T, pid int, what string, timeout time.Duration, ok func(map[string]int64) bool) map[string]int64 {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		st := statusKiB(t, pid)
		if ok(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: VmRSS %d KiB (anon %d, file %d)", what, timeout, st["VmRSS"], st["RssAnon"], st["RssFile"])
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// An idle s360edge with a 1 GiB max_size holds at most 40 MiB of
// anonymous memory (RssAnon: heap, stacks, Badger's tables), the memory the
// kernel cannot take back; file-backed pages of the executable are not
// counted. It keeps serving after a reload.
func TestIdleFootprint(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	s := startSim(t)
	config := strings.ReplaceAll(footprintCaddyfile, "SIMURL", s.URL)
	e := startEdge(t, config)
	pid := e.cmd.Process.Pid
	st := waitStatus(t, pid, "idle RssAnon at most 40 MiB", 15*time.Second, func(st map[string]int64) bool { return st["RssAnon"] <= 40<<10 })
	t.Logf("idle: VmRSS %d KiB (anon %d, file %d), VmHWM %d KiB", st["VmRSS"], st["RssAnon"], st["RssFile"], st["VmHWM"])

	url := e.URL + "/tnseb/backend-apis/catalogService/v1_33/getPOSConfig"
	status, hdr, first := post(t, url, `{}`)
	if status != 200 || hdr.Get("Cache-Status") != "s360edge; fwd=miss; stored" {
		t.Fatalf("first call: %d %q", status, hdr.Get("Cache-Status"))
	}
	e.Reload(t, strings.Replace(config, "max_size 1GiB", "max_size 512MiB", 1))
	status, hdr, again := post(t, url, `{}`)
	if status != 200 || !strings.HasPrefix(hdr.Get("Cache-Status"), "s360edge; hit;") || string(again) != string(first) {
		t.Fatalf("hit after a reload: %d %q", status, hdr.Get("Cache-Status"))
	}
	st = waitStatus(t, pid, "RssAnon at most 40 MiB after a miss, a hit and a reload", 15*time.Second, func(st map[string]int64) bool { return st["RssAnon"] <= 40<<10 })
	t.Logf("after a miss, a reload and a hit: VmRSS %d KiB (anon %d, file %d)", st["VmRSS"], st["RssAnon"], st["RssFile"])
}
