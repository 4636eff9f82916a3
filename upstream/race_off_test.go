//go:build !race

package upstream

const memScale = 1
