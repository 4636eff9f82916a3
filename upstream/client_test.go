package upstream

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/s360edge/s360edge/budget"
)

// fakeS360 is a minimal token endpoint plus one method, counting calls.
type fakeS360 struct {
	auths, calls atomic.Int32
	ttl          time.Duration
	reject       atomic.Int32 // answer 401 to the next N method calls
	authGate     chan struct{}
	handler      http.HandlerFunc
}

func jwt(exp time.Time, n int32) string {
	enc := base64.RawURLEncoding.EncodeToString
	claims := fmt.Sprintf(`{"sub":"MOSA","exp":%d,"n":%d}`, exp.Unix(), n)
	return enc([]byte(`{"alg":"HS256"}`)) + "." + enc([]byte(claims)) + ".sig"
}

func (f *fakeS360) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == AuthPath {
		n := f.auths.Add(1)
		if f.authGate != nil {
			<-f.authGate
		}
		var creds map[string]string
		json.NewDecoder(r.Body).Decode(&creds)
		if creds["secret"] != "s3cret" || r.Header.Get("Authorization") != "" {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprintf(w, `{"error":"bad credentials for %s"}`, creds["secret"])
			return
		}
		fmt.Fprintf(w, `{"token":%q}`, jwt(time.Now().Add(f.ttl), n))
		return
	}
	f.calls.Add(1)
	if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") || f.reject.Load() > 0 {
		f.reject.Add(-1)
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if f.handler != nil {
		f.handler(w, r)
		return
	}
	io.WriteString(w, `{"statusCode":"success","auth":"`+r.Header.Get("Authorization")+`"}`)
}

func setup(t *testing.T, mod func(*Config, *fakeS360)) (*Client, *fakeS360) {
	t.Helper()
	f := &fakeS360{ttl: 40 * time.Second}
	cfg := Config{Operator: "MOSA_WEB", Secret: "s3cret", Partner: "p"}
	if mod != nil {
		mod(&cfg, f)
	}
	if cfg.Transport == nil {
		srv := httptest.NewServer(f)
		t.Cleanup(srv.Close)
		cfg.BaseURL = srv.URL
	}
	return New(cfg), f
}

// memTransport serves requests with a handler in memory, for tests in a synctest bubble:
// there network I/O would keep fake time from advancing (it is not durably blocking).
type memTransport struct{ h http.Handler }

func (m memTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body == nil {
		r = r.Clone(r.Context())
		r.Body = http.NoBody
	}
	w := httptest.NewRecorder()
	m.h.ServeHTTP(w, r)
	return w.Result(), nil
}

const path = "/tnseb/backend-apis/catalogService/v1_33/getPOSConfig"

// posCall is a buyer's call of path.
var posCall = callTo(path)

func callTo(p string) Call {
	return Call{Path: p, Method: "catalogService/getPOSConfig", Priority: budget.Foreground}
}

// funcGate is a Gate whose Acquire is acquire (nil admits every call) and
// whose MaxWait is maxWait.
type funcGate struct {
	acquire func(ctx context.Context, c Call) error
	maxWait time.Duration
}

func (g funcGate) Acquire(ctx context.Context, c Call) error {
	if g.acquire == nil {
		return nil
	}
	return g.acquire(ctx, c)
}
func (funcGate) Observe(Call, int, http.Header) {}
func (g funcGate) MaxWait(Call) time.Duration   { return g.maxWait }

func TestTokenReusedThenRefreshedBeforeExpiry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, f := setup(t, func(cfg *Config, f *fakeS360) {
			cfg.BaseURL, cfg.Transport = "http://s360.test", memTransport{f}
		})
		ctx := context.Background()
		for range 3 {
			if r, err := c.Do(ctx, posCall, []byte(`{}`)); err != nil || r.Status != 200 {
				t.Fatalf("Do: %v %v", r, err)
			}
		}
		if f.auths.Load() != 1 {
			t.Fatalf("token fetched %d times for 3 calls, want 1", f.auths.Load())
		}
		time.Sleep(29 * time.Second) // 40 s token: refresh margin is 10 s
		c.Do(ctx, posCall, []byte(`{}`))
		if f.auths.Load() != 1 {
			t.Fatalf("token refreshed too early")
		}
		time.Sleep(2 * time.Second)
		c.Do(ctx, posCall, []byte(`{}`))
		if f.auths.Load() != 2 {
			t.Fatalf("token not refreshed within its margin: %d fetches", f.auths.Load())
		}
	})
}

func TestUnauthorizedRefreshesOnceAndRetriesOnce(t *testing.T) {
	c, f := setup(t, nil)
	ctx := context.Background()
	c.Do(ctx, posCall, []byte(`{}`))
	f.reject.Store(1)
	r, err := c.Do(ctx, posCall, []byte(`{}`))
	if err != nil || r.Status != 200 {
		t.Fatalf("after one 401: %v %v", r, err)
	}
	if f.auths.Load() != 2 || f.calls.Load() != 3 {
		t.Fatalf("auths=%d calls=%d, want 2 and 3", f.auths.Load(), f.calls.Load())
	}
	f.reject.Store(5)
	r, err = c.Do(ctx, posCall, []byte(`{}`))
	if err != nil || r.Status != 401 {
		t.Fatalf("persistent 401 should come back as the answer: %v %v", r, err)
	}
	if f.calls.Load() != 5 {
		t.Fatalf("retried more than once: calls=%d", f.calls.Load())
	}
}

func TestBadCredentialsNeverLeakTheSecret(t *testing.T) {
	c, _ := setup(t, func(cfg *Config, _ *fakeS360) { cfg.Secret = "wrong-secret-xyz" })
	_, err := c.Do(context.Background(), posCall, []byte(`{}`))
	var ue *Error
	if !errors.As(err, &ue) || ue.Kind != AuthFailed {
		t.Fatalf("want AuthFailed, got %v", err)
	}
	if strings.Contains(err.Error(), "wrong-secret-xyz") {
		t.Fatalf("secret in error: %v", err)
	}
}

func TestConcurrentCallersShareOneTokenFetch(t *testing.T) {
	gate := make(chan struct{})
	c, f := setup(t, func(_ *Config, f *fakeS360) { f.authGate = gate })
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.Do(context.Background(), posCall, []byte(`{}`))
			errs <- err
		}()
	}
	deadline := time.Now().Add(5 * time.Second)
	for f.auths.Load() == 0 {
		if time.Now().After(deadline) {
			close(gate)
			t.Fatal("no token fetch started within 5s")
		}
		time.Sleep(time.Millisecond)
	}
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if f.auths.Load() != 1 {
		t.Fatalf("%d token fetches, want 1", f.auths.Load())
	}
}

func TestFailureKinds(t *testing.T) {
	block := make(chan struct{})
	defer close(block)
	c, _ := setup(t, func(cfg *Config, f *fakeS360) {
		cfg.Timeout = 200 * time.Millisecond
		f.handler = func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-block:
			case <-r.Context().Done():
			}
		}
	})
	_, err := c.Do(context.Background(), posCall, []byte(`{}`))
	var ue *Error
	if !errors.As(err, &ue) || ue.Kind != Timeout {
		t.Fatalf("want Timeout, got %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Do(ctx, posCall, []byte(`{}`)); !errors.As(err, &ue) || ue.Kind != Canceled {
		t.Fatalf("want Canceled, got %v", err)
	}

	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	c2 := New(Config{BaseURL: dead.URL, Secret: "s3cret"})
	if _, err := c2.Do(context.Background(), posCall, []byte(`{}`)); !errors.As(err, &ue) || ue.Kind != Unreachable {
		t.Fatalf("want Unreachable, got %v", err)
	}
}

func TestGzipAndSizeLimit(t *testing.T) {
	big := `{"statusCode":"success","pad":"` + strings.Repeat("x", 5000) + `"}`
	c, _ := setup(t, func(cfg *Config, f *fakeS360) {
		cfg.MaxResponseBytes = 6000
		f.handler = func(w http.ResponseWriter, r *http.Request) {
			if !strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
				t.Error("gzip not asked for")
			}
			w.Header().Set("Content-Encoding", "gzip")
			gz := gzip.NewWriter(w)
			if strings.HasSuffix(r.URL.Path, "big") {
				io.WriteString(gz, big+strings.Repeat(" ", 2000))
			} else {
				io.WriteString(gz, big)
			}
			gz.Close()
		}
	})
	r, err := c.Do(context.Background(), posCall, []byte(`{}`))
	if err != nil || string(r.Body) != big {
		t.Fatalf("gzip body not decoded: %v %.40q", err, r.Body)
	}
	_, err = c.Do(context.Background(), callTo(path+"big"), []byte(`{}`))
	var ue *Error
	if !errors.As(err, &ue) || ue.Kind != TooLarge {
		t.Fatalf("want TooLarge, got %v", err)
	}
}

func TestGateGuardsEveryCall(t *testing.T) {
	var waits atomic.Int32
	c, _ := setup(t, func(cfg *Config, _ *fakeS360) {
		cfg.Gate = funcGate{acquire: func(context.Context, Call) error {
			if waits.Add(1) > 2 {
				return errors.New("budget spent")
			}
			return nil
		}}
	})
	if _, err := c.Do(context.Background(), posCall, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	_, err := c.Do(context.Background(), posCall, []byte(`{}`))
	var ue *Error
	if !errors.As(err, &ue) || ue.Kind != Refused || waits.Load() != 3 {
		t.Fatalf("want Refused after token+call, got %v (waits %d)", err, waits.Load())
	}
}

// recordGate records the calls it admits and observes.
type recordGate struct {
	mu                 sync.Mutex
	acquired, observed []Call
}

func (g *recordGate) Acquire(_ context.Context, c Call) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.acquired = append(g.acquired, c)
	return nil
}

func (g *recordGate) Observe(c Call, _ int, _ http.Header) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.observed = append(g.observed, c)
}

func (*recordGate) MaxWait(Call) time.Duration { return 0 }

// The Gate sees the token's own call (order priority, nobody's) and then
// the call as the caller made it, before and after each is sent.
func TestGateSeesTheTokenCallThenTheCall(t *testing.T) {
	g := &recordGate{}
	c, _ := setup(t, func(cfg *Config, _ *fakeS360) { cfg.Gate = g })
	call := posCall
	call.Key, call.Client = "k", "192.0.2.1"
	if _, err := c.Do(context.Background(), call, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	want := []Call{{Path: AuthPath, Method: "auth", Priority: budget.Order}, call}
	for _, got := range [][]Call{g.acquired, g.observed} {
		if len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
			t.Errorf("the gate saw %+v, want %+v", got, want)
		}
	}
}

func TestExpiry(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	if at := refreshAt(jwt(now.Add(20*time.Second), 1), now); !at.Equal(now.Add(15 * time.Second)) {
		t.Errorf("20 s token refreshed at %v", at.Sub(now))
	}
	if at := refreshAt(jwt(now.Add(time.Hour), 1), now); !at.Equal(now.Add(time.Hour - 30*time.Second)) {
		t.Errorf("1 h token refreshed at %v", at.Sub(now))
	}
	for _, tok := range []string{"opaque", "a.b.c", jwt(now.Add(-time.Second), 1)} {
		if at := refreshAt(tok, now); !at.Equal(now.Add(45 * time.Second)) {
			t.Errorf("%q refreshed at %v", tok, at.Sub(now))
		}
	}
	enc := base64.RawURLEncoding.EncodeToString
	ms := enc([]byte(`{}`)) + "." + enc([]byte(fmt.Sprintf(`{"exp":%d}`, now.Add(time.Minute).UnixMilli()))) + ".x"
	if exp, ok := expiry(ms); !ok || !exp.Equal(now.Add(time.Minute)) {
		t.Errorf("millisecond exp read as %v %v", exp, ok)
	}
}

func TestTokenWaitIsBoundedByMaxWait(t *testing.T) {
	gate := make(chan struct{})
	defer close(gate)
	c, f := setup(t, func(cfg *Config, f *fakeS360) {
		f.authGate = gate
		cfg.Gate = funcGate{maxWait: 50 * time.Millisecond}
	})
	_, err := c.Do(context.Background(), posCall, []byte(`{}`))
	var ue *Error
	if !errors.As(err, &ue) || ue.Kind != Refused {
		t.Fatalf("want Refused while the token is stuck, got %v", err)
	}
	if f.calls.Load() != 0 {
		t.Fatal("call made without a token")
	}
}

// A gzip answer is read into a buffer of its length (gzip's trailer),
// so that the body kept is no larger than the answer; odd or hostile
// streams are read right or refused as Invalid, never over the bounds.
func TestGzipAnswers(t *testing.T) {
	// Numbers compress about as much as a catalog does (a few times).
	var ids strings.Builder
	for i := range 40000 {
		fmt.Fprintf(&ids, "%d,", i*7919%100003)
	}
	body := `{"statusCode":"success","ids":[` + ids.String() + `0]}`
	gz := func(parts ...string) []byte {
		var b bytes.Buffer
		for _, p := range parts { // one gzip member each
			w := gzip.NewWriter(&b)
			io.WriteString(w, p)
			w.Close()
		}
		return b.Bytes()
	}
	whole := gz(body)
	hugeTrailer := bytes.Clone(whole)
	binary.LittleEndian.PutUint32(hugeTrailer[len(hugeTrailer)-4:], 0xFFFFFFF0)
	for _, tc := range []struct {
		name     string
		answer   []byte
		want     string // the body, or "" for an Invalid error
		exactCap bool
	}{
		{"one member: exact buffer", whole, body, true},
		{"two members: the last trailer is short, the buffer grows", gz(body[:1000], body[1000:]), body, false},
		{"cut stream", whole[:len(whole)/2], "", false},
		{"trailer claims 4 GiB: refused by gzip's check, not by the reading bound", hugeTrailer, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := setup(t, func(cfg *Config, f *fakeS360) {
				cfg.Reading = NewReading(4 << 20) // room for the body, not for the trailer's claim
				f.handler = func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Content-Encoding", "gzip")
					w.Write(tc.answer)
				}
			})
			r, err := c.Do(context.Background(), posCall, []byte(`{}`))
			if tc.want == "" {
				var ue *Error
				if !errors.As(err, &ue) || ue.Kind != Invalid {
					t.Fatalf("want Invalid, got %v", err)
				}
				return
			}
			if err != nil || string(r.Body) != tc.want {
				t.Fatalf("body not decoded: %v %.40q", err, r.Body)
			}
			// One byte more, to see the end without growing.
			if tc.exactCap && cap(r.Body) > len(r.Body)+1 {
				t.Errorf("body kept in a %d-byte array for %d bytes", cap(r.Body), len(r.Body))
			}
			if ce := r.Header.Get("Content-Encoding"); ce != "" {
				t.Errorf("Content-Encoding %q left on a decoded answer", ce)
			}
		})
	}
}

// Two large gzip answers under a Reading bound that fits one at a time
// (its compressed and decompressed bytes) but not both compressed bodies
// and one decompressed: each call holding its compressed bytes while
// waiting for room to decompress would leave both waiting until their
// timeout. Both answers are read, one after the other.
func TestConcurrentGzipAnswersDoNotHoldAndWait(t *testing.T) {
	var ids strings.Builder
	for i := range 100000 {
		fmt.Fprintf(&ids, "%d,", i*7919%100003)
	}
	body := `{"statusCode":"success","ids":[` + ids.String() + `0]}`
	var zb bytes.Buffer
	zw := gzip.NewWriter(&zb)
	io.WriteString(zw, body)
	zw.Close()
	z, d := int64(zb.Len()), int64(len(body))+1 // the first buffer is one byte over the body
	bound := z + d + z/2                        // one at a time, not two compressed bodies and one buffer
	headers := make(chan struct{}, 2)
	bodies := make(chan struct{})
	cl, _ := setup(t, func(cfg *Config, f *fakeS360) {
		cfg.Timeout = 5 * time.Second
		cfg.Reading = NewReading(bound)
		f.handler = func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Encoding", "gzip")
			w.Header().Set("Content-Length", strconv.FormatInt(z, 10))
			w.WriteHeader(200)
			http.NewResponseController(w).Flush()
			headers <- struct{}{}
			<-bodies
			w.Write(zb.Bytes())
		}
	})
	if _, err := cl.Token(context.Background(), posCall); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 2)
	for range 2 {
		go func() {
			resp, err := cl.Do(context.Background(), posCall, []byte(`{}`))
			if err == nil && string(resp.Body) != body {
				err = errors.New("body not decoded")
			}
			errs <- err
		}()
	}
	<-headers
	<-headers
	// Both calls hold their compressed bytes (known length) before either
	// body arrives.
	sem, probe := cl.cfg.Reading.sem, bound-2*z+1
	for deadline := time.Now().Add(10 * time.Second); sem.TryAcquire(probe); {
		sem.Release(probe)
		if time.Now().After(deadline) {
			t.Fatal("the two calls did not both take room for their compressed bytes")
		}
		time.Sleep(time.Millisecond)
	}
	close(bodies)
	for range 2 {
		if err := <-errs; err != nil {
			t.Errorf("a gzip answer was not read: %v", err)
		}
	}
	if !sem.TryAcquire(bound) {
		t.Fatal("room of the Reading bound not given back")
	}
}
