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

// Issue 11 item 7: an idle s360edge with a 1 GiB max_size holds at most
// 40 MiB. Starting maps some 40 MiB of the executable that serving does not
// use; the binary gives them back once its config runs, and goes on serving.
func TestIdleFootprint(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	s := startSim(t)
	e := startEdge(t, strings.ReplaceAll(footprintCaddyfile, "SIMURL", s.URL))
	pid := e.cmd.Process.Pid
	const limit = 40 << 10 // KiB
	var st map[string]int64
	deadline := time.Now().Add(15 * time.Second)
	for st = statusKiB(t, pid); st["VmRSS"] > limit; st = statusKiB(t, pid) {
		if time.Now().After(deadline) {
			t.Fatalf("idle VmRSS %d KiB (anon %d, file %d) after 15 s, want at most %d", st["VmRSS"], st["RssAnon"], st["RssFile"], limit)
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("idle: VmRSS %d KiB (anon %d, file %d), VmHWM %d KiB", st["VmRSS"], st["RssAnon"], st["RssFile"], st["VmHWM"])

	url := e.URL + "/tnseb/backend-apis/catalogService/v1_33/getPOSConfig"
	status, hdr, first := post(t, url, `{}`)
	if status != 200 || hdr.Get("Cache-Status") != "s360edge; fwd=miss; stored" {
		t.Fatalf("first call: %d %q", status, hdr.Get("Cache-Status"))
	}
	status, hdr, again := post(t, url, `{}`)
	if status != 200 || !strings.HasPrefix(hdr.Get("Cache-Status"), "s360edge; hit;") || string(again) != string(first) {
		t.Fatalf("hit after the pages were given back: %d %q", status, hdr.Get("Cache-Status"))
	}
}
