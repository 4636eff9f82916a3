// Package redistest runs Debian's redis-server (7) as a process for tests:
// on a free 127.0.0.1 port, without persistence, killed when the test
// ends. A test may kill it, start it again on the same address (empty, as
// after a crash) and pause it.
package redistest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Server is one redis-server process. Its methods are for the test's own
// goroutine.
type Server struct {
	Addr     string // 127.0.0.1:port
	Password string // requirepass, "" for none

	t    testing.TB
	bin  string
	dir  string   // its --dir, which also holds its output
	args []string // more arguments of redis-server
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
}

// bindTries bounds the starts on new ports after losing the chosen one to
// another process; three losses in a row mean something else is wrong.
const bindTries = 3

// readyWithin bounds the wait for a started server to answer.
const readyWithin = 15 * time.Second

// errPortTaken: another process had the port when redis-server bound it.
var errPortTaken = errors.New("port taken by another process")

// Start runs redis-server on a free loopback port, with password as its
// requirepass when not empty, and returns once it answers. Redis cannot
// bind port 0 and report the port, so a port chosen free can be taken
// before redis-server binds it: then it is started again on a new one.
// Without redis-server the test is skipped, or fails when CI is set (CI
// installs it, see .ci/run).
func Start(t testing.TB, password string) *Server {
	t.Helper()
	return start(t, password, freeAddr)
}

// StartCluster is Start of a Redis Cluster node (cluster_enabled:1) with
// no slots assigned: alone, it refuses every key with CLUSTERDOWN; what it
// is for is a client's check of what it was given.
func StartCluster(t testing.TB) *Server {
	t.Helper()
	return start(t, "", freeAddr, "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf")
}

func start(t testing.TB, password string, pick func(testing.TB) string, args ...string) *Server {
	t.Helper()
	s := &Server{Password: password, t: t, bin: binary(t), dir: t.TempDir(), args: args}
	t.Cleanup(func() {
		s.kill()
		if t.Failed() {
			t.Logf("--- redis-server %s output ---\n%s", s.Addr, s.output())
		}
	})
	for try := 1; ; try++ {
		s.Addr = pick(t)
		err := s.run()
		if err == nil {
			return s
		}
		if try == bindTries || !errors.Is(err, errPortTaken) {
			t.Fatalf("redis-server on %s: %v\n%s", s.Addr, err, s.output())
		}
	}
}

// binary finds redis-server.
func binary(t testing.TB) string {
	t.Helper()
	path, err := exec.LookPath("redis-server")
	if err == nil {
		return path
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("redis-server not found, and CI must run the tests that need it (apt-get install redis-server): %v", err)
	}
	t.Skip("redis-server not found; apt-get install redis-server to run the tests that need a real Redis")
	return ""
}

func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// URL is the server's redis:// URL, database 0.
func (s *Server) URL() string {
	if s.Password != "" {
		return "redis://:" + s.Password + "@" + s.Addr + "/0"
	}
	return "redis://" + s.Addr + "/0"
}

// run starts redis-server on s.Addr and waits until it answers as itself:
// a server that answers with another process id is another one that holds
// the port, while this one fails to bind it.
func (s *Server) run() error {
	_, port, _ := net.SplitHostPort(s.Addr)
	args := []string{"--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", s.dir, "--loglevel", "warning", "--enable-debug-command", "local"}
	if s.Password != "" {
		args = append(args, "--requirepass", s.Password)
	}
	args = append(args, s.args...)
	out, err := os.Create(s.log())
	if err != nil {
		return err
	}
	defer out.Close() // the child has its own copy
	cmd := exec.Command(s.bin, args...)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		return err
	}
	s.cmd, s.done = cmd, make(chan struct{})
	go func(done chan struct{}) { cmd.Wait(); close(done) }(s.done)
	for deadline := time.Now().Add(readyWithin); ; time.Sleep(20 * time.Millisecond) {
		select {
		case <-s.done:
			s.cmd = nil
			if strings.Contains(s.output(), "in use") {
				return errPortTaken
			}
			return errors.New("redis-server exited")
		default:
		}
		if pid, err := s.pid(); err == nil {
			if pid == s.cmd.Process.Pid {
				return nil
			}
			s.kill()
			return fmt.Errorf("%w: a server with pid %d answers", errPortTaken, pid)
		}
		if time.Now().After(deadline) {
			s.kill()
			return fmt.Errorf("no answer within %v", readyWithin)
		}
	}
}

// pid asks the server on s.Addr for its process id.
func (s *Server) pid() (int, error) {
	conn, err := net.DialTimeout("tcp", s.Addr, time.Second)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(time.Second))
	r := bufio.NewReader(conn)
	if s.Password != "" {
		conn.Write(command("AUTH", s.Password))
		if line, err := r.ReadString('\n'); err != nil || line != "+OK\r\n" {
			return 0, fmt.Errorf("AUTH: %q %v", line, err)
		}
	}
	conn.Write(command("INFO", "server"))
	line, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "$") {
		return 0, fmt.Errorf("INFO: %q %v", line, err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(line[1:]))
	if err != nil {
		return 0, err
	}
	info := make([]byte, n)
	if _, err := io.ReadFull(r, info); err != nil {
		return 0, err
	}
	for l := range strings.Lines(string(info)) {
		if v, ok := strings.CutPrefix(l, "process_id:"); ok {
			return strconv.Atoi(strings.TrimSpace(v))
		}
	}
	return 0, errors.New("INFO without process_id")
}

// command is args as a RESP array of bulk strings.
func command(args ...string) []byte {
	b := fmt.Appendf(nil, "*%d\r\n", len(args))
	for _, a := range args {
		b = fmt.Appendf(b, "$%d\r\n%s\r\n", len(a), a)
	}
	return b
}

// Kill ends redis-server with SIGKILL, as a crash would (a paused one
// too), and fails the test unless its port then refuses connections.
func (s *Server) Kill() {
	s.t.Helper()
	s.kill()
	if c, err := net.DialTimeout("tcp", s.Addr, time.Second); err == nil {
		c.Close()
		s.t.Fatalf("something still listens on %s after redis-server was killed", s.Addr)
	}
}

// kill is Kill without the check; it does nothing when the server is not
// running.
func (s *Server) kill() {
	if s.cmd == nil {
		return
	}
	s.cmd.Process.Signal(syscall.SIGCONT)
	s.cmd.Process.Kill()
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		s.t.Errorf("redis-server (pid %d) survived SIGKILL for 10s", s.cmd.Process.Pid)
	}
	s.cmd = nil
}

// Restart starts a new, empty redis-server on the killed one's address.
func (s *Server) Restart() {
	s.t.Helper()
	if s.cmd != nil {
		s.t.Fatal("redistest: Restart of a running redis-server; Kill it first")
	}
	if err := s.run(); err != nil {
		s.t.Fatalf("redis-server did not start again on %s: %v\n%s", s.Addr, err, s.output())
	}
}

// Pause freezes the server (SIGSTOP): the kernel still accepts
// connections, but nothing answers. Resume (SIGCONT) thaws it.
func (s *Server) Pause()  { s.cmd.Process.Signal(syscall.SIGSTOP) }
func (s *Server) Resume() { s.cmd.Process.Signal(syscall.SIGCONT) }

// output is the end of what redis-server wrote to stdout and stderr in
// its latest run, for a failure report.
func (s *Server) output() string {
	b, _ := os.ReadFile(s.log())
	return string(b[max(0, len(b)-4000):])
}

func (s *Server) log() string { return filepath.Join(s.dir, "output") }
