package upstream

import (
	"context"
	"testing"
)

type callerValue struct{}

// The token fetch, shared by callers, runs under Config.Context: it sees
// none of the first caller's values, and ends with that context.
func TestTokenFetchRunsUnderTheClientsContext(t *testing.T) {
	base, cancel := context.WithCancel(context.Background())
	var sawCaller []any
	c, _ := setup(t, func(cfg *Config, _ *fakeS360) {
		cfg.Context = base
		cfg.Gate = funcGate{acquire: func(ctx context.Context, c Call) error {
			if c.Path == AuthPath {
				sawCaller = append(sawCaller, ctx.Value(callerValue{}))
			}
			return nil
		}}
	})
	caller := context.WithValue(context.Background(), callerValue{}, "request")
	if _, err := c.Do(caller, posCall, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if len(sawCaller) != 1 || sawCaller[0] != nil {
		t.Fatalf("token fetches saw the caller's values %v, want one fetch that saw none", sawCaller)
	}
	c.invalidate(c.token)
	cancel()
	if _, err := c.Do(caller, posCall, []byte(`{}`)); err == nil {
		t.Fatal("a token fetch ran after the client's context ended")
	}
}
