//go:build race

package upstream

// The race detector makes scanning 100 MiB answers take minutes: memory
// tests scale down under it.
const memScale = 10
