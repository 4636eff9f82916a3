// Package s360edge is the plugin's import path for xcaddy: importing it
// registers the s360 Caddy modules (see caddymodule).
//
//	xcaddy build --with github.com/s360edge/s360edge
package s360edge

import _ "github.com/s360edge/s360edge/caddymodule"
