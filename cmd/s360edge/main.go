// Command s360edge is Caddy with its standard modules plus the s360 edge cache.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/s360edge/s360edge/caddymodule"
)

func main() {
	caddycmd.Main()
}
