// Command benchcaddy is Caddy with its standard modules, s360edge and the
// bench-only static_bytes handler, so that a cache hit and its baseline run
// in the same binary.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/s360edge/s360edge/bench/staticbytes"
	_ "github.com/s360edge/s360edge/caddymodule"
)

func main() {
	caddycmd.Main()
}
