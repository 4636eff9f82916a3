// Package mdsection replaces one generated section of a Markdown file,
// between <!-- NAME:begin --> and <!-- NAME:end -->, so that make bench and
// make storm each rewrite their own results and leave the rest alone.
package mdsection

import (
	"bytes"
	"os"
)

// Replace puts content between the markers of name in the file at path,
// appending the section (and creating the file) when it is missing.
func Replace(path, name string, content []byte) error {
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	begin := []byte("<!-- " + name + ":begin -->\n")
	end := []byte("<!-- " + name + ":end -->\n")
	section := append(append(append([]byte{}, begin...), bytes.TrimRight(content, "\n")...), '\n')
	section = append(section, end...)
	i, j := bytes.Index(old, begin), bytes.Index(old, end)
	var out []byte
	if i >= 0 && j > i {
		out = append(append(append(out, old[:i]...), section...), old[j+len(end):]...)
	} else {
		out = append(out, old...)
		if len(out) > 0 && !bytes.HasSuffix(out, []byte("\n\n")) {
			out = append(out, '\n')
		}
		out = append(out, section...)
	}
	return os.WriteFile(path, out, 0o644)
}
