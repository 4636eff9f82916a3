//go:build linux

// Package exepages gives back the pages of the executable that only
// starting the process used. Package initialization (some 500 packages in
// s360edge), adapting and provisioning the config touch about 40 MiB of the
// executable's code and read-only data; the kernel maps them in fault-around
// blocks (64 KiB or a whole large folio), and they stay in the process's RSS
// although an idle or serving edge uses about 3 MiB of them
// (BENCHMARKS.md, footprint).
package exepages

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// Release drops this process's mappings of the resident pages of its own
// executable's read-only segments (MADV_DONTNEED) and returns how many
// bytes were resident in them. The pages stay in the page cache, now
// reclaimable like any cached file; a page used again is mapped again on
// its next access, from the cache. A segment holding a private copy of a
// page (relocations, a debugger's breakpoint) is left alone, since dropping
// would lose the copy.
func Release() (int64, error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, err
	}
	return release(exe)
}

type mapping struct {
	start, end uintptr
	writable   bool
	rss, anon  int64 // bytes
}

func release(path string) (int64, error) {
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return 0, err
	}
	ms, err := mappingsOf(smaps, path)
	if err != nil {
		return 0, err
	}
	var released int64
	for _, m := range ms {
		if m.writable || m.anon > 0 || m.rss == 0 {
			continue
		}
		if _, _, errno := syscall.Syscall(syscall.SYS_MADVISE, m.start, m.end-m.start, syscall.MADV_DONTNEED); errno != 0 {
			return released, fmt.Errorf("madvise %#x-%#x: %w", m.start, m.end, errno)
		}
		released += m.rss
	}
	return released, nil
}

// mappingsOf parses /proc/self/smaps and returns the mappings of path.
func mappingsOf(smaps []byte, path string) ([]mapping, error) {
	var out []mapping
	var cur *mapping
	sc := bufio.NewScanner(bytes.NewReader(smaps))
	for sc.Scan() {
		line := sc.Text()
		key, rest, _ := strings.Cut(line, " ")
		if k, ok := strings.CutSuffix(key, ":"); ok {
			if cur == nil || (k != "Rss" && k != "Anonymous") {
				continue
			}
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("smaps: %q: %w", line, err)
			}
			if k == "Rss" {
				cur.rss = kb << 10
			} else {
				cur.anon = kb << 10
			}
			continue
		}
		// A mapping's header: start-end perms offset dev inode [path];
		// the path may hold spaces.
		cur = nil
		f := strings.Fields(line)
		if len(f) < 6 {
			continue
		}
		rest = line
		for range 5 {
			rest = strings.TrimLeft(rest, " ")
			_, rest, _ = strings.Cut(rest, " ")
		}
		if strings.TrimSpace(rest) != path {
			continue
		}
		s, e, ok := strings.Cut(f[0], "-")
		start, err1 := strconv.ParseUint(s, 16, 64)
		end, err2 := strconv.ParseUint(e, 16, 64)
		if !ok || err1 != nil || err2 != nil || len(f[1]) < 2 {
			return nil, fmt.Errorf("smaps: bad mapping line %q", line)
		}
		out = append(out, mapping{start: uintptr(start), end: uintptr(end), writable: f[1][1] == 'w'})
		cur = &out[len(out)-1]
	}
	return out, sc.Err()
}
