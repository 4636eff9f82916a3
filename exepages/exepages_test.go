//go:build linux

package exepages

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"unsafe"
)

const page = 4096

func mapOf(t *testing.T, path string, addr uintptr) mapping {
	t.Helper()
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	ms, err := mappingsOf(smaps, path)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.start == addr {
			return m
		}
	}
	t.Fatalf("no mapping of %s at %#x in %d mappings", path, addr, len(ms))
	return mapping{}
}

func addr(b []byte) uintptr { return uintptr(unsafe.Pointer(&b[0])) }

// A clean read-only mapping loses its resident pages and still reads the
// file; a mapping holding a private copy, and a writable one, keep theirs.
func TestReleaseDropsCleanPagesKeepsPrivateCopies(t *testing.T) {
	path := filepath.Join(t.TempDir(), "segment")
	want := bytes.Repeat([]byte("s360edge"), 64*page/8)
	if err := os.WriteFile(path, want, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	mmap := func(prot int) []byte {
		b, err := syscall.Mmap(int(f.Fd()), 0, len(want), prot, syscall.MAP_PRIVATE)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { syscall.Munmap(b) })
		return b
	}
	clean, copied, writable := mmap(syscall.PROT_READ), mmap(syscall.PROT_READ|syscall.PROT_WRITE), mmap(syscall.PROT_READ|syscall.PROT_WRITE)
	copied[0] = 'S' // a private copy of the first page, as relocations make
	if err := syscall.Mprotect(copied, syscall.PROT_READ); err != nil {
		t.Fatal(err)
	}
	var sum byte
	for i := 0; i < len(want); i += page {
		sum += clean[i] + copied[i] + writable[i]
	}
	before := map[string]mapping{"clean": mapOf(t, path, addr(clean)), "copied": mapOf(t, path, addr(copied)), "writable": mapOf(t, path, addr(writable))}
	if before["clean"].rss != int64(len(want)) || before["copied"].anon == 0 || before["writable"].rss == 0 {
		t.Fatalf("setup: %+v (sum %d)", before, sum)
	}

	released, err := release(path)
	if err != nil {
		t.Fatal(err)
	}
	if released != before["clean"].rss {
		t.Errorf("released %d bytes, want the clean mapping's %d", released, before["clean"].rss)
	}
	if m := mapOf(t, path, addr(clean)); m.rss != 0 {
		t.Errorf("clean mapping still has %d bytes resident", m.rss)
	}
	if m := mapOf(t, path, addr(copied)); m.rss != before["copied"].rss || m.anon != before["copied"].anon {
		t.Errorf("mapping with a private copy changed: %+v, was %+v", m, before["copied"])
	}
	if m := mapOf(t, path, addr(writable)); m.rss != before["writable"].rss {
		t.Errorf("writable mapping changed: %+v, was %+v", m, before["writable"])
	}
	if copied[0] != 'S' || !bytes.Equal(copied[1:], want[1:]) {
		t.Error("the private copy was lost")
	}
	if !bytes.Equal(clean, want) {
		t.Error("the released mapping no longer reads the file")
	}
}

// The test binary gives back its resident read-only pages and goes on
// running code from them.
func TestReleaseOwnExecutable(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	resident := func() (n int64) {
		smaps, err := os.ReadFile("/proc/self/smaps")
		if err != nil {
			t.Fatal(err)
		}
		ms, err := mappingsOf(smaps, exe)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			if !m.writable {
				n += m.rss
			}
		}
		return n
	}
	before := resident()
	released, err := Release()
	if err != nil {
		t.Fatal(err)
	}
	after := resident()
	runtime.GC() // walks stacks and tables of the released segments
	if released == 0 || after >= before {
		t.Errorf("released %d bytes; resident read-only pages %d before, %d after", released, before, after)
	}
}

func TestMappingsOf(t *testing.T) {
	smaps := `00400000-00600000 r-xp 00000000 fe:00 42                                 /opt/my app/s360edge
Size:               2048 kB
Rss:                1024 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me
00600000-00700000 r--p 00200000 fe:00 42                                 /opt/my app/s360edge
Rss:                  12 kB
Anonymous:             4 kB
00700000-00800000 rw-p 00300000 fe:00 42                                 /opt/my app/s360edge
Rss:                   8 kB
Anonymous:             8 kB
00800000-00900000 rw-p 00000000 00:00 0 
Rss:                 100 kB
Anonymous:           100 kB
7f0000000000-7f0000001000 r-xp 00000000 fe:00 7                          /usr/lib/libc.so.6
Rss:                   4 kB
Anonymous:             0 kB
`
	tests := []struct {
		name, smaps, path string
		want              []mapping
		wantErr           bool
	}{
		{"path with a space, every segment", smaps, "/opt/my app/s360edge", []mapping{
			{start: 0x400000, end: 0x600000, rss: 1024 << 10},
			{start: 0x600000, end: 0x700000, rss: 12 << 10, anon: 4 << 10},
			{start: 0x700000, end: 0x800000, writable: true, rss: 8 << 10, anon: 8 << 10},
		}, false},
		{"another file", smaps, "/usr/lib/libc.so.6", []mapping{{start: 0x7f0000000000, end: 0x7f0000001000, rss: 4 << 10}}, false},
		{"a prefix of a path is not the path", smaps, "/opt/my", nil, false},
		{"replaced executable", "00400000-00600000 r-xp 00000000 fe:00 42 /usr/bin/s360edge (deleted)\nRss: 8 kB\n", "/usr/bin/s360edge (deleted)",
			[]mapping{{start: 0x400000, end: 0x600000, rss: 8 << 10}}, false},
		{"bad address", "0040zz00-00600000 r-xp 00000000 fe:00 42 /x\n", "/x", nil, true},
		{"bad size", "00400000-00600000 r-xp 00000000 fe:00 42 /x\nRss: many kB\n", "/x", nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := mappingsOf([]byte(tc.smaps), tc.path)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want error %v", err, tc.wantErr)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			for i := range got {
				if got[i] != tc.want[i] {
					t.Errorf("mapping %d: got %+v, want %+v", i, got[i], tc.want[i])
				}
			}
		})
	}
}
