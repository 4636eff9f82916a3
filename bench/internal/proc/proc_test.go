package proc

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestStartWaitUpStop(t *testing.T) {
	dir := t.TempDir()
	t.Run("output goes to the log", func(t *testing.T) {
		log := filepath.Join(dir, "echo.log")
		p, err := Start(log, []string{"GREETING=hello"}, "sh", "-c", `echo "$GREETING"; echo oops >&2`)
		if err != nil {
			t.Fatal(err)
		}
		<-p.done // the log is closed once the process is gone
		if b, _ := os.ReadFile(log); string(b) != "hello\noops\n" {
			t.Fatalf("log %q, want stdout and stderr with the env", b)
		}
	})
	t.Run("a process that exits fails WaitUp at once", func(t *testing.T) {
		p, err := Start(filepath.Join(dir, "true.log"), nil, "true")
		if err != nil {
			t.Fatal(err)
		}
		// Nothing listens on the port: only the exit can end the wait early.
		began := time.Now()
		err = WaitUp("http://127.0.0.1:"+FreePort()+"/", p, time.Minute)
		if err == nil || !strings.Contains(err.Error(), "true exited") || time.Since(began) > 20*time.Second {
			t.Fatalf("WaitUp: %v after %s, want \"true exited\" well before the minute", err, time.Since(began))
		}
	})
	t.Run("an answer ends WaitUp; Stop ends the process", func(t *testing.T) {
		p, err := Start(filepath.Join(dir, "sleep.log"), nil, "sleep", "300")
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
		defer srv.Close()
		if err := WaitUp(srv.URL, p, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		p.Stop()
		select {
		case <-p.done:
		default:
			t.Fatal("the process still runs after Stop")
		}
	})
	t.Run("nothing answering times out", func(t *testing.T) {
		p, err := Start(filepath.Join(dir, "sleep2.log"), nil, "sleep", "300")
		if err != nil {
			t.Fatal(err)
		}
		defer p.Stop()
		if err := WaitUp("http://127.0.0.1:"+FreePort()+"/", p, 300*time.Millisecond); err == nil || !strings.Contains(err.Error(), "timed out") {
			t.Fatalf("WaitUp: %v, want a time-out", err)
		}
	})
	t.Run("a missing binary is an error", func(t *testing.T) {
		if _, err := Start(filepath.Join(dir, "none.log"), nil, filepath.Join(dir, "no-such-binary")); err == nil {
			t.Fatal("Start of a missing binary succeeded")
		}
	})
}
