// Package proc runs the child processes of the bench commands (simulator,
// sidecars, redis-server, nginx) on free loopback ports, each stopped by its
// PID, and reads their JSON control and admin endpoints.
package proc

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"
)

// Proc is a started child process.
type Proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// Start runs name with args and the environment plus env, its output in a
// new file at logPath.
func Start(logPath string, env []string, name string, args ...string) (*Proc, error) {
	log, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, err
	}
	p := &Proc{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); log.Close(); close(p.done) }()
	return p, nil
}

// Stop sends SIGTERM and waits, killing the process after 20 s.
func (p *Proc) Stop() {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

// PID is the process's id, for reading /proc/<pid>.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// FreePort is a loopback port that was free a moment ago.
func FreePort() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return fmt.Sprint(l.Addr().(*net.TCPAddr).Port)
}

// WaitUp polls url until it answers; p exiting meanwhile, or timeout
// passing, fails it.
func WaitUp(url string, p *Proc, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited", filepath.Base(p.cmd.Path))
		default:
		}
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("timed out waiting for %s", url)
}

// GetJSON decodes the JSON answer of a GET of url into v.
func GetJSON(url string, v any) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return json.NewDecoder(resp.Body).Decode(v)
}

// StartSim runs binDir's s360sim with args on a free loopback port, its
// output in work/sim.log, and waits up to wait for it to answer; it
// returns the process and its base URL.
func StartSim(work, binDir string, wait time.Duration, args ...string) (*Proc, string, error) {
	addr := "127.0.0.1:" + FreePort()
	sim, err := Start(filepath.Join(work, "sim.log"), nil, filepath.Join(binDir, "s360sim"), append([]string{"-addr", addr}, args...)...)
	if err != nil {
		return nil, "", err
	}
	url := "http://" + addr
	if err := WaitUp(url+"/_sim/fixtures", sim, wait); err != nil {
		sim.Stop()
		return nil, "", err
	}
	return sim, url, nil
}
