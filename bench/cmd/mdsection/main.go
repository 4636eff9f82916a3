// Command mdsection replaces the section NAME of a Markdown FILE with
// standard input: mdsection FILE NAME < content.
package main

import (
	"fmt"
	"io"
	"os"

	"github.com/s360edge/s360edge/bench/internal/mdsection"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: mdsection FILE NAME < content")
		os.Exit(2)
	}
	b, err := io.ReadAll(os.Stdin)
	if err == nil {
		err = mdsection.Replace(os.Args[1], os.Args[2], b)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "mdsection:", err)
		os.Exit(1)
	}
}
