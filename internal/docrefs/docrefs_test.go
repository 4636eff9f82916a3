package docrefs

import (
	"strings"
	"testing"
)

// TestRepository is the check itself: every citation in the repository's
// Markdown files and comments names a file that is in the repository.
func TestRepository(t *testing.T) {
	files, err := Load("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := files["README.md"]; !ok {
		t.Fatal("README.md not found at ../..: is the test running from internal/docrefs?")
	}
	for _, p := range Check(files) {
		t.Error(p)
	}
}

// TestCheck runs the checker on a small repository in memory, with one good
// and one bad citation of each kind.
func TestCheck(t *testing.T) {
	files := map[string][]byte{
		".gitignore": []byte("/bin/\n*.test\n"),
		"README.md": []byte(strings.Join([]string{
			"# Title",
			"See [the architecture](docs/ARCHITECTURE.md#state) and [ops](docs/OPS.md).", // line 2: the second link
			"Links elsewhere are not checked: [Caddy](https://caddyserver.com), [mail](mailto:a@b.c), [here](#title).",
			"The layout: `sim/`, `sim/doc.go`, `gone/` and `sim/gone.go`.", // line 4: the last path; gone/ is no top-level entry
			"Built into `bin/s360edge` (ignored); `/tnseb/backend-apis` is no repository path.",
			"Cited by name: docs/S360.md, S360-API.md and https://example.com/NOTES.md.", // line 6: the second name
			"Outside: " + outside + "/DESIGN.md.",                                        // line 7: the directory, and the file in it
		}, "\n")),
		"docs/ARCHITECTURE.md": []byte("Back to the [README](../README.md), and [a sibling](S360.md), [not one](../S360.md).\n"), // line 1: the last link, beside README
		"docs/S360.md":         []byte("# S-360\n"),
		"sim/doc.go": []byte(strings.Join([]string{
			"// Package sim follows docs/S360.md, \"Rate limits\".",
			"package sim",
			"",
			"/* After S360-API.md §4, and README.md. */", // line 4: the first name
			"var s = \"S360-API.md in a string is not a comment\"",
		}, "\n")),
		"Makefile": []byte("# see BENCHMARKS.md\nall:\n\techo README.md\n"), // line 1
	}
	var got []string
	for _, p := range Check(files) {
		got = append(got, p.String())
	}
	want := []string{
		"Makefile:1: cites BENCHMARKS.md, which is not in the repository",
		"README.md:2: cites docs/OPS.md, which is not in the repository",
		"README.md:4: cites sim/gone.go, which is not in the repository",
		"README.md:6: cites S360-API.md, which is not in the repository",
		"README.md:7: cites " + outside + ", which is not in the repository",
		"README.md:7: cites " + outside + "/DESIGN.md, which is not in the repository",
		"docs/ARCHITECTURE.md:1: cites ../S360.md, which is not in the repository",
		"sim/doc.go:4: cites S360-API.md, which is not in the repository",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("Check found\n\t%s\nwant\n\t%s", strings.Join(got, "\n\t"), strings.Join(want, "\n\t"))
	}
}
