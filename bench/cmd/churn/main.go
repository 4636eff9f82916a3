// Command churn sends distinct getCatalogDetailed requests (so every one is a
// miss that stores a new catalog) to s360edge for a while, and samples the
// size of its storage directory and its RSS. Output is Markdown.
package main

import (
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	edge := flag.String("edge", "", "s360edge base URL")
	pid := flag.Int("pid", 0, "s360edge process id, for RSS")
	dir := flag.String("dir", "", "s360edge storage directory")
	d := flag.Duration("d", time.Minute, "duration of the churn")
	every := flag.Duration("every", 10*time.Second, "sampling period")
	conc := flag.Int("c", 4, "concurrent clients")
	start := flag.Int("start", 0, "first key number (use a new range after a restart)")
	flag.Parse()
	if *edge == "" || *pid == 0 || *dir == "" {
		fmt.Fprintln(os.Stderr, "usage: churn -edge URL -pid PID -dir STORAGE [-d 10m] [-every 10s] [-c 4]")
		os.Exit(2)
	}

	url := *edge + "/tnseb/backend-apis/catalogService/v1_33/getCatalogDetailed"
	var next atomic.Int64
	next.Store(int64(*start))
	var mu sync.Mutex
	statuses := map[string]int{}
	var bodyBytes atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range *conc {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				// Unknown fields are part of the cache key and ignored by the simulator:
				// every request is a new key with the whole catalog as its answer.
				body := fmt.Sprintf(`{"churn":%d}`, next.Add(1))
				k := "error"
				resp, err := http.Post(url, "application/json", strings.NewReader(body))
				if err == nil {
					n, _ := io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					bodyBytes.Add(n)
					k = fmt.Sprint(resp.StatusCode)
				}
				mu.Lock()
				statuses[k]++
				mu.Unlock()
				if k != "200" {
					// Refused by the edge's budget (429) or failed: back off
					// rather than spin on refusals.
					time.Sleep(100 * time.Millisecond)
				}
			}
		})
	}

	fmt.Println("| t | requests | dir MiB (file sizes) | dir MiB (on disk) | files | RSS MiB | peak RSS MiB |")
	fmt.Println("|--:|--:|--:|--:|--:|--:|--:|")
	t0 := time.Now()
	sample := func() {
		size, alloc, files := dirSize(*dir)
		fmt.Printf("| %s | %d | %.1f | %.1f | %d | %s | %s |\n", time.Since(t0).Round(time.Second),
			next.Load()-int64(*start), mib(size), mib(alloc), files, rss(*pid, "VmRSS"), rss(*pid, "VmHWM"))
	}
	sample()
	tick := time.NewTicker(*every)
	end := time.After(*d)
loop:
	for {
		select {
		case <-tick.C:
			sample()
		case <-end:
			break loop
		}
	}
	close(stop)
	wg.Wait()
	sample()
	mu.Lock()
	fmt.Printf("\nstatuses: %v; %.0f MiB of answers received\n", statuses, mib(bodyBytes.Load()))
	mu.Unlock()
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// dirSize sums the file sizes under dir and the space they occupy (Badger preallocates sparse files).
func dirSize(dir string) (size, alloc int64, files int) {
	filepath.WalkDir(dir, func(_ string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return nil // files come and go under compaction and GC
		}
		fi, err := de.Info()
		if err != nil {
			return nil
		}
		files++
		size += fi.Size()
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			alloc += st.Blocks * 512
		}
		return nil
	})
	return size, alloc, files
}

// rss reads a field of /proc/PID/status in MiB.
func rss(pid int, field string) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return "-"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			var kb int64
			fmt.Sscan(rest, &kb)
			return fmt.Sprintf("%.1f", float64(kb)/1024)
		}
	}
	return "-"
}
