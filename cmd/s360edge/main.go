// Command s360edge is Caddy with its standard modules plus the s360 edge
// cache: the same binary as `caddy`, so any Caddyfile an ops team already
// writes keeps working (`storage file_system`, `basic_auth`, `php_fastcgi`,
// …). `make xcaddy` builds the same thing with xcaddy.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	// Caddy's standard modules, as in the caddy binary.
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/s360edge/s360edge/caddymodule"
)

func main() {
	caddycmd.Main()
}
