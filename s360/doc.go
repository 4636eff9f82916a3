// Package s360 holds what s360edge knows of the S-360 (SecuTix) web services
// protocol: the URL scheme, which methods are cacheable and in which class,
// the canonical cache key of a JSON call, and the response envelope.
//
// It imports nothing of Caddy, so its tests build in seconds.
package s360
