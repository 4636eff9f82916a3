// Package docrefs checks that the repository stands alone: that what
// README.md, docs/*.md, BENCHMARKS.md and the code's comments cite is in
// the repository. Its test runs the check on the checkout, so `make test`
// (and CI) fails on a citation of a file that is not there.
//
// What counts as a citation:
//
//   - in a Markdown file, a link [text](path) with a relative path (an
//     anchor or query after the path is ignored; http, https and mailto
//     links are not checked): path must exist relative to the file's
//     directory, as a renderer resolves it;
//   - in a Markdown file, a backquoted path whose first segment is a
//     top-level file or directory of the repository (`cluster/`,
//     `sim/doc.go`), except under a directory a .gitignore names;
//   - in a Markdown file, and in a comment of a Go file or of a shell,
//     Makefile, YAML or Caddyfile, a mention of a *.md file (README.md,
//     docs/S360.md): it must exist relative to the repository root or to
//     the citing file's directory;
//   - anywhere, a reference to the directory "shared" beside the
//     repository (see outside) is an error: nothing outside the repository
//     may be cited.
package docrefs

import (
	"fmt"
	"go/scanner"
	"go/token"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
)

// Problem is one citation of something that is not in the repository.
type Problem struct {
	File  string // slash path from the repository root
	Line  int
	Cited string
}

func (p Problem) String() string {
	return fmt.Sprintf("%s:%d: cites %s, which is not in the repository", p.File, p.Line, p.Cited)
}

// outside is the reference to a directory beside the repository that no
// file may make. Built, so that this file does not cite it itself.
var outside = ".." + "/shared"

var (
	urlRE     = regexp.MustCompile(`[a-zA-Z][a-zA-Z0-9+.-]*://[^\s)>\]` + "`" + `]*`)
	linkRE    = regexp.MustCompile(`\]\(([^()\s]+)(?:\s+"[^"]*")?\)`)
	mdRE      = regexp.MustCompile(`(?:\.{1,2}/)*(?:[A-Za-z0-9_-][A-Za-z0-9_.-]*/)*[A-Za-z0-9_-][A-Za-z0-9_.-]*\.md\b`)
	backRE    = regexp.MustCompile("`([^`\\s]+)`")
	repoPath  = regexp.MustCompile(`^[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)*/?$`)
	hashNames = map[string]bool{"Makefile": true, "run": true}
	hashExts  = map[string]bool{".sh": true, ".yml": true, ".yaml": true, ".conf": true}
)

// Load reads the repository at root: every file's slash path, with its
// contents (none for a file over 1 MiB: data, not text). It skips .git, and
// the directories the repository's .gitignore files name (bin, tmp,
// bench/work…), which hold builds and runs, not sources.
func Load(root string) (map[string][]byte, error) {
	files := map[string][]byte{}
	ignored := map[string]bool{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			if ignored[rel] || d.Name() == ".git" {
				return filepath.SkipDir
			}
			// A directory's .gitignore applies to what is below it.
			if b, err := os.ReadFile(filepath.Join(p, ".gitignore")); err == nil {
				for _, dir := range ignoredDirs(rel, b) {
					ignored[dir] = true
				}
			}
			return nil
		}
		if !d.Type().IsRegular() || d.Name() == ".git" { // a worktree's .git is a file
			return nil
		}
		var data []byte
		if info, err := d.Info(); err == nil && info.Size() <= 1<<20 {
			if data, err = os.ReadFile(p); err != nil {
				return err
			}
		}
		files[rel] = data
		return nil
	})
	return files, err
}

// ignoredDirs lists the directories a .gitignore in dir names plainly
// ("/bin/", "/work/"), as slash paths from the root. Patterns with
// wildcards name files, not the directories Check looks into.
func ignoredDirs(dir string, gitignore []byte) []string {
	var dirs []string
	for _, l := range strings.Split(string(gitignore), "\n") {
		l = strings.TrimSpace(l)
		if !strings.HasPrefix(l, "/") || !strings.HasSuffix(l, "/") || strings.ContainsAny(l, "*?[!") {
			continue
		}
		dirs = append(dirs, path.Join(dir, strings.Trim(l, "/")))
	}
	return dirs
}

// Check returns every citation in files (slash path → contents, as Load
// gives them) of a path that is not among them, in file and line order.
func Check(files map[string][]byte) []Problem {
	exists := map[string]bool{".": true}
	top := map[string]bool{}
	var ignored []string
	for f, data := range files {
		for p := f; p != "."; p = path.Dir(p) {
			exists[p] = true
		}
		top[strings.SplitN(f, "/", 2)[0]] = true
		if path.Base(f) == ".gitignore" {
			ignored = append(ignored, ignoredDirs(path.Dir(f), data)...)
		}
	}
	under := func(p string) bool {
		for _, d := range ignored {
			if p == d || strings.HasPrefix(p, d+"/") {
				return true
			}
		}
		return false
	}
	var problems []Problem
	for f, data := range files {
		c := checker{file: f, exists: exists}
		for i, line := range strings.Split(string(data), "\n") {
			if strings.Contains(line, outside) {
				c.add(i+1, outside)
			}
		}
		switch {
		case strings.HasSuffix(f, ".md"):
			for i, line := range strings.Split(string(data), "\n") {
				c.markdown(i+1, line, top, under)
			}
		case strings.HasSuffix(f, ".go"):
			for _, cm := range goComments(data) {
				for j, line := range strings.Split(cm.text, "\n") {
					c.mentions(cm.line+j, line)
				}
			}
		case hashComments(f):
			for i, line := range strings.Split(string(data), "\n") {
				if _, comment, ok := strings.Cut(line, "#"); ok {
					c.mentions(i+1, comment)
				}
			}
		}
		problems = append(problems, c.problems...)
	}
	sort.Slice(problems, func(i, j int) bool {
		if problems[i].File != problems[j].File {
			return problems[i].File < problems[j].File
		}
		return problems[i].Line < problems[j].Line
	})
	return problems
}

type checker struct {
	file     string
	exists   map[string]bool
	problems []Problem
}

func (c *checker) add(line int, cited string) {
	p := Problem{File: c.file, Line: line, Cited: cited}
	if n := len(c.problems); n > 0 && c.problems[n-1] == p {
		return // a link's target is also a mention
	}
	c.problems = append(c.problems, p)
}

// fromDir reports whether p exists relative to the citing file's directory.
func (c *checker) fromDir(p string) bool {
	return c.exists[path.Join(path.Dir(c.file), p)]
}

// fromRoot reports whether p exists relative to the repository root.
func (c *checker) fromRoot(p string) bool {
	return !strings.HasPrefix(p, "../") && c.exists[path.Clean(strings.TrimPrefix(p, "/"))]
}

// mentions checks the *.md files a line names, URLs aside.
func (c *checker) mentions(n int, line string) {
	line = urlRE.ReplaceAllString(line, " ")
	for _, m := range mdRE.FindAllString(line, -1) {
		if !c.fromRoot(m) && !c.fromDir(m) {
			c.add(n, m)
		}
	}
}

// markdown checks one line of a Markdown file: links, backquoted repository
// paths and *.md mentions.
func (c *checker) markdown(n int, line string, top map[string]bool, ignored func(string) bool) {
	for _, m := range linkRE.FindAllStringSubmatch(line, -1) {
		target := m[1]
		if strings.Contains(target, ":") || strings.HasPrefix(target, "#") {
			continue // a URL (http, https, mailto…) or an anchor of this page
		}
		if i := strings.IndexAny(target, "#?"); i >= 0 {
			target = target[:i]
		}
		ok := c.fromDir(target)
		if strings.HasPrefix(target, "/") {
			ok = c.fromRoot(target)
		}
		if !ok {
			c.add(n, target)
		}
	}
	for _, m := range backRE.FindAllStringSubmatch(line, -1) {
		p := m[1]
		first, _, slash := strings.Cut(p, "/")
		if !slash || !repoPath.MatchString(p) || !top[first] || ignored(path.Clean(p)) {
			continue
		}
		if !c.fromRoot(p) {
			c.add(n, p)
		}
	}
	c.mentions(n, line)
}

// hashComments reports whether f is a file whose comments start with #.
func hashComments(f string) bool {
	base := path.Base(f)
	return hashExts[path.Ext(f)] || hashNames[base] || strings.HasPrefix(base, "Caddyfile")
}

type comment struct {
	line int
	text string
}

// goComments returns the comments of a Go file, with their first lines. A
// file that does not scan yields what was read before the error.
func goComments(src []byte) []comment {
	fset := token.NewFileSet()
	file := fset.AddFile("", fset.Base(), len(src))
	var s scanner.Scanner
	s.Init(file, src, nil, scanner.ScanComments)
	var out []comment
	for {
		pos, tok, lit := s.Scan()
		if tok == token.EOF {
			return out
		}
		if tok == token.COMMENT {
			out = append(out, comment{line: file.Line(pos), text: lit})
		}
	}
}
