// Package integration runs the real s360edge and s360sim binaries as
// processes on free loopback ports and talks to them over HTTP.
package integration

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "s360edge-bin-")
	if err != nil {
		panic(err)
	}
	binDir = dir
	for _, b := range []string{"s360edge", "s360sim"} {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, b), "../cmd/"+b)
		if prebuilt := os.Getenv("S360EDGE_TEST_BINARY"); b == "s360edge" && prebuilt != "" {
			// Another build of s360edge (bench/cluster-faults.sh measures
			// an older commit with these tests).
			cmd = exec.Command("cp", prebuilt, filepath.Join(dir, b))
		}
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "building %s: %v\n", b, err)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is a running binary whose output is kept for assertions and for
// the failure report.
type proc struct {
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
}

func (p *proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

// start runs the binary name that TestMain built.
func start(t *testing.T, name string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, done: make(chan struct{})}
	p.cmd = exec.Command(filepath.Join(binDir, name), args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() { p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.Stop(t)
		if t.Failed() {
			t.Logf("--- %s output ---\n%s", name, tail(p.Output(), 8000))
		}
	})
	return p
}

// Stop sends SIGTERM and waits; it is idempotent.
func (p *proc) Stop(t *testing.T) {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
		t.Errorf("%s did not stop on SIGTERM", p.name)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// freeAddr returns a loopback address that was free a moment ago. Another
// process may bind it before the caller does: use it only for a child that
// cannot bind port 0 and report its port, and retry on "address already in
// use" (startEdge does).
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// bindRetries bounds the restarts of a child that lost its freeAddr port to
// another process; three losses in a row mean something else is wrong.
const bindRetries = 3

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sim is a running simulator.
type sim struct {
	*proc
	URL string
}

const (
	simOperator = "MOSA_WEB"
	simSecret   = "integration-secret-3f9a"
)

// startSim runs the simulator on port 0: it prints the address it bound,
// so no other process can take the port between choosing and binding it.
func startSim(t *testing.T, args ...string) *sim {
	t.Helper()
	args = append([]string{"-addr", "127.0.0.1:0", "-operator", simOperator, "-secret", simSecret}, args...)
	s := &sim{proc: start(t, "s360sim", nil, args...)}
	waitFor(t, "s360sim to report its address", 20*time.Second, func() bool {
		if m := simBanner.FindStringSubmatch(s.Output()); m != nil {
			s.URL = m[1]
			return true
		}
		s.failIfExited(t)
		return false
	})
	waitFor(t, "s360sim to serve", 20*time.Second, func() bool {
		resp, err := http.Get(s.URL + "/_sim/fixtures")
		if err == nil {
			resp.Body.Close()
		}
		s.failIfExited(t)
		return err == nil && resp.StatusCode == 200
	})
	return s
}

// simBanner is the line s360sim prints once it listens; the newline makes
// sure the address was read whole.
var simBanner = regexp.MustCompile(`s360sim listening on (http://127\.0\.0\.1:[0-9]+)\n`)

// failIfExited fails the test at once when p has exited, instead of
// letting a wait for it run into its deadline.
func (p *proc) failIfExited(t *testing.T) {
	t.Helper()
	select {
	case <-p.done:
		t.Fatalf("%s exited:\n%s", p.name, tail(p.Output(), 8000))
	default:
	}
}

type counters struct {
	Calls       map[string]int `json:"calls"`
	Statuses    map[string]int `json:"statuses"`
	RateLimited int            `json:"rateLimited"`
	Total       int            `json:"total"`
}

func (s *sim) Counters(t *testing.T) counters {
	t.Helper()
	var c counters
	getJSON(t, s.URL+"/_sim/counters", &c)
	return c
}

type fixtures struct {
	Institution string `json:"institution"`
	PosID       int64  `json:"posId"`
	Products    []struct {
		ID           int64  `json:"id"`
		Name         string `json:"name"`
		Performances []struct {
			ID                     int64   `json:"id"`
			State                  string  `json:"state"`
			SeatCategoryIDs        []int64 `json:"seatCategoryIds"`
			AudienceSubCategoryIDs []int64 `json:"audienceSubCategoryIds"`
		} `json:"performances"`
	} `json:"products"`
}

func (s *sim) Fixtures(t *testing.T) fixtures {
	t.Helper()
	var f fixtures
	getJSON(t, s.URL+"/_sim/fixtures", &f)
	return f
}

func (s *sim) Control(t *testing.T, path, body string) {
	t.Helper()
	resp, err := http.Post(s.URL+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("POST %s %s: %d %s", path, body, resp.StatusCode, b)
	}
}

// edge is a running s360edge.
type edge struct {
	*proc
	URL, Admin, Config string
	t                  *testing.T
}

// startEdge writes the Caddyfile (with %[1]s for the listen address,
// %[2]s for the admin address) and runs s360edge on it. Caddy cannot report
// a port it chose, so the ports come from freeAddr, and a start that lost
// one of them to another process is retried on new ones.
func startEdge(t *testing.T, caddyfile string, env ...string) *edge {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte("website"), 0o600); err != nil {
		t.Fatal(err)
	}
	env = append(env, "S360_OPERATOR="+simOperator, "S360_SECRET="+simSecret, "XDG_DATA_HOME="+dir, "HOME="+dir)
	for attempt := 1; ; attempt++ {
		e := &edge{URL: "http://" + freeAddr(t), Admin: freeAddr(t), Config: filepath.Join(dir, "Caddyfile"), t: t}
		e.write(caddyfile)
		e.proc = start(t, "s360edge", env, "run", "--config", e.Config, "--adapter", "caddyfile")
		if e.waitListening(t) {
			return e
		}
		if attempt == bindRetries || !strings.Contains(e.Output(), "address already in use") {
			t.Fatalf("s360edge exited:\n%s", tail(e.Output(), 8000))
		}
		t.Logf("s360edge lost a port to another process (attempt %d), retrying on new ports", attempt)
	}
}

// waitListening waits until the edge answers on its listen address; false
// means the process exited first. It fails the test at the deadline.
func (e *edge) waitListening(t *testing.T) bool {
	t.Helper()
	exited := false
	waitFor(t, "s360edge to listen", 30*time.Second, func() bool {
		select {
		case <-e.done:
			exited = true
			return true
		default:
		}
		resp, err := http.Get(e.URL + "/")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	return !exited
}

func (e *edge) write(caddyfile string) {
	listen := strings.TrimPrefix(e.URL, "http://")
	if err := os.WriteFile(e.Config, []byte(fmt.Sprintf(caddyfile, listen, e.Admin)), 0o600); err != nil {
		e.t.Fatal(err)
	}
}

// Reload runs `s360edge reload` with a new Caddyfile and fails the test if
// the reload is refused.
func (e *edge) Reload(t *testing.T, caddyfile string) {
	t.Helper()
	e.write(caddyfile)
	out, err := exec.Command(filepath.Join(binDir, "s360edge"), "reload", "--config", e.Config, "--adapter", "caddyfile", "--address", e.Admin).CombinedOutput()
	if err != nil {
		t.Fatalf("reload: %v\n%s", err, out)
	}
}

// post calls the sidecar and returns status, headers and body.
func post(t *testing.T, url, body string, hdr ...string) (int, http.Header, []byte) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, b
}

var noRedirect = &http.Client{
	Timeout:       2 * time.Minute,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

func getJSON(t *testing.T, url string, v any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

// lines returns the log lines of p containing s.
func lines(p *proc, s string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(p.Output()))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), s) {
			out = append(out, sc.Text())
		}
	}
	return out
}

func newRequest(method, url, body string) (*http.Request, error) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err == nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, err
}

// restartEdge starts a new s360edge process on the stopped one's config,
// ports and storage, with extraEnv (e.g. the oidc secrets) added.
func restartEdge(t *testing.T, old *edge, extraEnv ...string) *edge {
	t.Helper()
	e := &edge{URL: old.URL, Admin: old.Admin, Config: old.Config, t: t}
	dir := filepath.Dir(old.Config)
	env := append([]string{"S360_OPERATOR=" + simOperator, "S360_SECRET=" + simSecret, "XDG_DATA_HOME=" + dir, "HOME=" + dir}, extraEnv...)
	e.proc = start(t, "s360edge", env, "run", "--config", e.Config, "--adapter", "caddyfile")
	// The ports are the old process's, released just now; they cannot be
	// changed without changing what the test restarts.
	if !e.waitListening(t) {
		t.Fatalf("restarted s360edge exited:\n%s", tail(e.Output(), 8000))
	}
	return e
}

// siteCaddyfile is the sidecar in front of the simulator at simURL, its
// s360 block ending in the lines s360, then the site's other directives
// (the website; s360 is ordered before reverse_proxy and file_server).
// %[1]s and %[2]s stay for startEdge.
func siteCaddyfile(simURL string, s360, site []string) string {
	const tmpl = `{
	admin %[2]s
}
http://%[1]s {
	s360 {
		upstream     @SIM@
		operator     {env.S360_OPERATOR}
		secret       {env.S360_SECRET}
		shop         @SIM@
		storage      {env.XDG_DATA_HOME}/store
		@S360@
	}
	@SITE@
}
`
	return strings.NewReplacer("@SIM@", simURL, "@S360@", strings.Join(s360, "\n\t\t"),
		"@SITE@", strings.Join(site, "\n\t")).Replace(tmpl)
}

// staticSite is a website of static files: startEdge's index.html.
var staticSite = []string{"root * {env.XDG_DATA_HOME}", "file_server"}

// noFloors sets our own per-call floors to 0.
var noFloors = []string{"min_interval catalogService/* 0", "min_interval availabilityService/* 0"}

// pollsOffCaddyfile is siteCaddyfile without the polls, so that only the
// test's calls reach the simulator; extra is the rest of the s360 block (a
// login block: oidcLogin or a saml subBlock).
func pollsOffCaddyfile(simURL, extra string, site ...string) string {
	return siteCaddyfile(simURL, []string{"setup_poll 0", "updates_poll 0", extra}, site)
}

// oidcLogin is the oidc block for the provider issuer and the client
// clientID, whose secrets come from oidcEnv's environment, with the lines
// more (protect, token_auth).
func oidcLogin(issuer, clientID string, more ...string) string {
	return subBlock("oidc", append([]string{"issuer " + issuer, "client_id " + clientID,
		"client_secret {env.OIDC_CLIENT_SECRET}", "cookie_secret {env.S360_COOKIE_KEY}"}, more...)...)
}

// subBlock is the block name { lines } inside the s360 block.
func subBlock(name string, lines ...string) string {
	return name + " {\n\t\t\t" + strings.Join(lines, "\n\t\t\t") + "\n\t\t}"
}
