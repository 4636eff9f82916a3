// Command cachehandler is Caddy v2.11.9 with its standard modules and
// caddyserver/cache-handler v0.16.0: the reference point for the s360 hit
// benchmark. It is its own module so that cache-handler's dependency graph
// never touches s360edge's or benchcaddy's.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddyserver/cache-handler"
)

func main() {
	caddycmd.Main()
}
