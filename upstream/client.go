// Package upstream is the sidecar's HTTP client for the S-360 web services:
// it holds the operator's credentials, fetches and reuses the API token, and
// turns transport failures into typed errors the handler maps to statuses.
//
// It imports nothing of Caddy.
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
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/semaphore"
	"golang.org/x/sync/singleflight"

	"github.com/s360edge/s360edge/s360"
)

// AuthPath is the S-360 token endpoint (docs/S360.md, "Authentication").
const AuthPath = "/tnai/backend-apis/v1/auth"

// Defaults, chosen for S-360's slowest documented call: getCatalogDetailed
// takes about 20 s and 10 MB (docs/S360.md, "Answers").
const (
	DefaultTimeout          = 60 * time.Second
	DefaultMaxResponseBytes = 64 << 20
	// DefaultReadingBytes bounds the bytes of answers being read at once
	// by every client of the process (see Reading).
	DefaultReadingBytes = 256 << 20
	// defaultTokenLifetime is assumed for tokens without a readable exp.
	defaultTokenLifetime = time.Minute
)

// Config configures a Client.
type Config struct {
	BaseURL          string // scheme://host of the institution, e.g. https://mosa.ws.secutix.com
	Operator         string
	Secret           string
	Partner          string
	Timeout          time.Duration // per call; DefaultTimeout when 0
	MaxResponseBytes int64         // DefaultMaxResponseBytes when 0; at most the Reading bound
	// Reading bounds the bytes of answers being read at once; nil shares
	// one bound of DefaultReadingBytes with every client of the process,
	// since memory is the process's.
	Reading   *Reading
	Transport http.RoundTripper
	// Gate, when set, admits every call (token calls included), bounds
	// a caller's wait for a token another call fetches, and sees every
	// answer (S-360's 509/429 pause what was called); nil admits all.
	Gate Gate
	// Context is what work shared by callers (the token fetch) runs
	// under, rather than the first caller's context and its values: the
	// edge's, canceled when it closes. Default context.Background().
	Context context.Context
}

// Kind classifies a failed call.
type Kind int

const (
	Unreachable Kind = iota // connection refused, reset, DNS, TLS
	Timeout                 // the upstream did not answer within Config.Timeout
	Canceled                // the caller went away
	AuthFailed              // the token endpoint refused the operator's credentials
	TooLarge                // the answer exceeded MaxResponseBytes, or the Reading bound could not take it
	Refused                 // the Gate refused the call (budget)
	Invalid                 // the answer was cut, or is not an S-360 answer (s360.Valid)
)

// Error is a failed call. Its message never holds the secret or the token.
type Error struct {
	Kind Kind
	Err  error
	// Sent is true when the request may have reached S-360: its headers
	// were written to a connection. Then S-360 may have run the call
	// (an order may exist) even though no usable answer came back. It is
	// false only when the call failed before that: refused by the Gate,
	// no token, DNS, connection refused, TLS.
	Sent bool
}

// Sent reports whether err is an *Error whose request may have reached
// S-360 (Error.Sent). Any other non-nil error counts as sent: when in doubt,
// assume the call ran.
func Sent(err error) bool {
	var ue *Error
	if errors.As(err, &ue) {
		return ue.Sent
	}
	return err != nil
}

func (e *Error) Error() string { return e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

// Response is an upstream answer, body decompressed.
type Response struct {
	Status int
	Header http.Header
	Body   []byte

	free func() // gives the Body's bytes back to the Reading bound
}

// Client calls one S-360 institution. It is safe for concurrent use.
type Client struct {
	cfg  Config
	http *http.Client

	mu     sync.Mutex
	token  string
	expiry time.Time
	fetch  singleflight.Group
}

// New returns a client for cfg.
func New(cfg Config) *Client {
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.MaxResponseBytes <= 0 {
		cfg.MaxResponseBytes = DefaultMaxResponseBytes
	}
	if cfg.Reading == nil {
		cfg.Reading = processReading
	}
	// One answer larger than the whole bound could never be read.
	cfg.MaxResponseBytes = min(cfg.MaxResponseBytes, cfg.Reading.size)
	if cfg.Context == nil {
		cfg.Context = context.Background()
	}
	cfg.BaseURL = strings.TrimRight(cfg.BaseURL, "/")
	tr := cfg.Transport
	if tr == nil {
		tr = &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
			ForceAttemptHTTP2:     true,
			MaxIdleConnsPerHost:   32,
			IdleConnTimeout:       90 * time.Second,
			TLSHandshakeTimeout:   10 * time.Second,
			ExpectContinueTimeout: time.Second,
		}
	}
	// Do asks for gzip itself (see gunzip) rather than let Go's transport
	// decompress: the transport hides the length, and an 11 MB catalog then
	// grew its buffer by doubling (some 32 MB allocated, a 16 MB array kept).
	return &Client{cfg: cfg, http: &http.Client{Transport: tr, CheckRedirect: noRedirects}}
}

func noRedirects(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }

// Do POSTs body to call.Path with the operator's token, once the Gate
// admitted call. A 401 answer refreshes the token and retries once: S-360
// rejected the call before running it, so the retry is safe even for
// orders. An answer whose body the website would get (see relayed) must be
// a valid S-360 answer (s360.Valid), else the call fails with Kind Invalid.
func (c *Client) Do(ctx context.Context, call Call, body []byte) (*Response, error) {
	tok, err := c.Token(ctx, call)
	if err != nil {
		return nil, notSent(err)
	}
	resp, err := c.post(ctx, call, body, tok)
	if err == nil && resp.Status == http.StatusUnauthorized {
		resp.free()
		c.invalidate(tok)
		if tok, err = c.Token(ctx, call); err != nil {
			return nil, notSent(err)
		}
		resp, err = c.post(ctx, call, body, tok)
	}
	if err != nil {
		return nil, err
	}
	// Checking a huge body takes a while: it stays charged until then.
	defer resp.free()
	if relayed(resp.Status) && !s360.Valid(resp.Body) {
		return nil, &Error{Kind: Invalid, Sent: true, Err: fmt.Errorf("calling %s: HTTP %d answer of %d bytes is not one JSON object with a statusCode", call.Path, resp.Status, len(resp.Body))}
	}
	return resp, nil
}

// relayed reports whether an answer of this status reaches the website as
// it is; the others (rate limits, auth failures, 5xx) become the sidecar's
// own errors, so their bodies do not matter.
func relayed(status int) bool {
	switch status {
	case http.StatusUnauthorized, http.StatusForbidden, http.StatusTooManyRequests:
		return false
	}
	return status < 500
}

// notSent marks a token failure as one before this call's request left:
// whatever happened to the token call, the method itself was not sent.
func notSent(err error) error {
	var ue *Error
	if errors.As(err, &ue) && ue.Sent {
		cp := *ue
		cp.Sent = false
		return &cp
	}
	return err
}

// Token returns a valid token for call, fetching one when the cached token
// is within its refresh margin. Concurrent callers share one fetch, which
// call waits for no longer than the Gate's MaxWait.
func (c *Client) Token(ctx context.Context, call Call) (string, error) {
	c.mu.Lock()
	tok, exp := c.token, c.expiry
	c.mu.Unlock()
	if tok != "" && time.Now().Before(exp) {
		return tok, nil
	}
	ch := c.fetch.DoChan("token", func() (any, error) {
		// Not the first caller's: if it goes away, the others still need
		// the token.
		ctx, cancel := context.WithTimeout(c.cfg.Context, c.cfg.Timeout)
		defer cancel()
		return c.fetchToken(ctx)
	})
	var timeout <-chan time.Time
	if c.cfg.Gate != nil {
		if d := c.cfg.Gate.MaxWait(call); d > 0 {
			t := time.NewTimer(d)
			defer t.Stop()
			timeout = t.C
		}
	}
	select {
	case r := <-ch:
		if r.Err != nil {
			return "", r.Err
		}
		return r.Val.(string), nil
	case <-timeout:
		return "", &Error{Kind: Refused, Err: errors.New("waiting for the S-360 token: not renewed in time")}
	case <-ctx.Done():
		return "", &Error{Kind: Canceled, Err: fmt.Errorf("waiting for the S-360 token: %w", ctx.Err())}
	}
}

func (c *Client) invalidate(tok string) {
	c.mu.Lock()
	if c.token == tok {
		c.token = ""
	}
	c.mu.Unlock()
}

func (c *Client) fetchToken(ctx context.Context) (string, error) {
	creds, _ := json.Marshal(map[string]string{"operator": c.cfg.Operator, "partner": c.cfg.Partner, "secret": c.cfg.Secret})
	resp, err := c.post(ctx, tokenCall, creds, "")
	if err != nil {
		return "", err
	}
	defer resp.free()
	var out struct {
		Token string `json:"token"`
	}
	if resp.Status != http.StatusOK || json.Unmarshal(resp.Body, &out) != nil || out.Token == "" {
		// The body may echo what we sent; keep it out of the message.
		return "", &Error{Kind: AuthFailed, Err: fmt.Errorf("getting an S-360 token for operator %q: upstream answered HTTP %d", c.cfg.Operator, resp.Status)}
	}
	now := time.Now()
	c.mu.Lock()
	c.token, c.expiry = out.Token, refreshAt(out.Token, now)
	c.mu.Unlock()
	return out.Token, nil
}

// refreshAt is when a token should be replaced: a quarter of its lifetime
// (at most 30 s) before its exp claim.
func refreshAt(tok string, now time.Time) time.Time {
	exp, ok := expiry(tok)
	if !ok || !exp.After(now) {
		return now.Add(defaultTokenLifetime * 3 / 4)
	}
	margin := min(exp.Sub(now)/4, 30*time.Second)
	return exp.Add(-margin)
}

// expiry reads the exp claim of a JWT without verifying it: the sidecar is
// not the audience, it only wants to know when to renew.
func expiry(tok string) (time.Time, bool) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, false
	}
	var claims struct {
		Exp json.Number `json:"exp"`
	}
	if json.Unmarshal(raw, &claims) != nil {
		return time.Time{}, false
	}
	sec, err := claims.Exp.Float64()
	if err != nil || sec <= 0 {
		return time.Time{}, false
	}
	if sec > 1e12 { // epoch millis, as one S-360 page says iat is
		sec /= 1000
	}
	return time.Unix(int64(sec), 0), true
}

func (c *Client) post(ctx context.Context, call Call, body []byte, tok string) (*Response, error) {
	if c.cfg.Gate != nil {
		if err := c.cfg.Gate.Acquire(ctx, call); err != nil {
			return nil, &Error{Kind: Refused, Err: err}
		}
	}
	path := call.Path
	ctx, cancel := context.WithTimeoutCause(ctx, c.cfg.Timeout, errUpstreamTimeout)
	defer cancel()
	// Headers on a connection are the first point S-360 could act on.
	var sent atomic.Bool
	tctx := httptrace.WithClientTrace(ctx, &httptrace.ClientTrace{WroteHeaders: func() { sent.Store(true) }})
	req, err := http.NewRequestWithContext(tctx, http.MethodPost, c.cfg.BaseURL+path, bytes.NewReader(body))
	if err != nil {
		return nil, &Error{Kind: Unreachable, Err: fmt.Errorf("building the upstream request: %w", err)}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	req.Header.Set("Accept-Encoding", "gzip")
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, c.classify(ctx, path, err, sent.Load())
	}
	defer resp.Body.Close()
	if c.cfg.Gate != nil {
		c.cfg.Gate.Observe(call, resp.StatusCode, resp.Header)
	}
	data, free, err := c.read(ctx, path, resp.Body, resp.ContentLength, 64<<10)
	if err == nil && strings.EqualFold(resp.Header.Get("Content-Encoding"), "gzip") {
		data, free, err = c.gunzip(ctx, path, data, free)
		resp.Header.Del("Content-Encoding")
		resp.Header.Del("Content-Length")
	}
	if err != nil {
		return nil, err
	}
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: data, free: free}, nil
}

// read reads an answer's body within MaxResponseBytes, charging the
// Reading bound for the memory it takes until free is called. A known
// length is charged at once and may wait for room (until ctx ends); an
// unknown one is charged as the buffer grows, and a growth the bound cannot
// take at once fails the call rather than wait while holding memory, which
// could leave every reader waiting for the others.
// first is the buffer's first size when the length is unknown.
func (c *Client) read(ctx context.Context, path string, body io.Reader, length, first int64) ([]byte, func(), error) {
	return c.readHolding(ctx, path, body, length, first, 0)
}

// readHolding is read with held bytes of the Reading bound already taken
// for it by the caller (the first buffer of an unknown length); they are
// given back with the rest.
func (c *Client) readHolding(ctx context.Context, path string, body io.Reader, length, first, held int64) ([]byte, func(), error) {
	r := c.cfg.Reading
	free := sync.OnceFunc(func() { r.sem.Release(held) })
	buf, err := c.readCharged(ctx, path, body, length, first, &held)
	if err != nil {
		free()
		return nil, nil, err
	}
	return buf, free, nil
}

// firstSize is the first buffer of an answer of unknown length.
func (c *Client) firstSize(first int64) int64 { return max(1, min(first, c.cfg.MaxResponseBytes+1)) }

func (c *Client) readCharged(ctx context.Context, path string, body io.Reader, length, first int64, held *int64) ([]byte, error) {
	limit, r := c.cfg.MaxResponseBytes, c.cfg.Reading
	tooLarge := &Error{Kind: TooLarge, Sent: true, Err: fmt.Errorf("reading %s: answer larger than %d bytes", path, limit)}
	if length > limit {
		return nil, tooLarge
	}
	cut := func(n int, err error) error {
		if ctx.Err() != nil {
			return c.classify(ctx, path, err, true)
		}
		return &Error{Kind: Invalid, Sent: true, Err: fmt.Errorf("reading %s: answer cut after %d bytes: %w", path, n, err)}
	}
	if length >= 0 {
		if err := r.sem.Acquire(ctx, length); err != nil {
			return nil, c.classify(ctx, path, err, true)
		}
		*held = length
		// net/http stops the body at Content-Length and reports a
		// shorter one as io.ErrUnexpectedEOF.
		buf := make([]byte, length)
		if n, err := io.ReadFull(body, buf); err != nil {
			return nil, cut(n, err)
		}
		return buf, nil
	}
	size := c.firstSize(first)
	if *held < size {
		if err := r.sem.Acquire(ctx, size-*held); err != nil {
			return nil, c.classify(ctx, path, err, true)
		}
		*held = size
	}
	buf := make([]byte, 0, size)
	for {
		if len(buf) == cap(buf) {
			if int64(len(buf)) > limit {
				return nil, tooLarge
			}
			grown := min(2*int64(cap(buf)), limit+1)
			if !r.sem.TryAcquire(grown) {
				return nil, &Error{Kind: TooLarge, Sent: true, Err: fmt.Errorf("reading %s: answers being read already take the %d bytes allowed", path, r.size)}
			}
			nb := make([]byte, len(buf), grown)
			copy(nb, buf)
			r.sem.Release(int64(cap(buf)))
			*held += grown - int64(cap(buf))
			buf = nb
		}
		n, err := body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, cut(len(buf), err)
		}
	}
	if int64(len(buf)) > limit {
		return nil, tooLarge
	}
	return buf, nil
}

// gunzip decompresses a gzip answer z, held until freeZ, within the same
// bounds as read. gzip's trailer holds the length (mod 2^32): the buffer
// starts at that size, so that the body kept is no larger than the answer
// and nothing is copied to grow it. The trailer is S-360's word, so the
// first size is also capped at 32 times the compressed size (JSON shrinks
// less than that); beyond it, or when the stream has several members (the
// trailer is the last one's), the buffer grows as for any answer of
// unknown length. gzip checks each member's CRC and length: a cut, corrupt
// or lying stream is Invalid.
//
// It never waits for room while holding z's: two answers each holding
// their compressed bytes and waiting for the other's room would both wait
// until their timeout. Room for the first buffer is taken at once if the
// bound has it; otherwise z's room is given back and room for both is
// waited for in one piece.
func (c *Client) gunzip(ctx context.Context, path string, z []byte, freeZ func()) ([]byte, func(), error) {
	defer func() { freeZ() }()
	zr, err := gzip.NewReader(bytes.NewReader(z))
	if err != nil {
		return nil, nil, &Error{Kind: Invalid, Sent: true, Err: fmt.Errorf("reading %s: the gzip answer does not start as one: %w", path, err)}
	}
	first := int64(64 << 10)
	if n := len(z); n >= 4 {
		first = min(int64(binary.LittleEndian.Uint32(z[n-4:]))+1, 32*int64(n)+64<<10)
	}
	r, size := c.cfg.Reading, c.firstSize(first)
	if !r.sem.TryAcquire(size) {
		zn := int64(len(z))
		freeZ()
		if zn+size > r.size {
			return nil, nil, &Error{Kind: TooLarge, Sent: true, Err: fmt.Errorf("reading %s: the compressed answer and its first %d bytes decompressed exceed the %d bytes allowed", path, size, r.size)}
		}
		if err := r.sem.Acquire(ctx, zn+size); err != nil {
			return nil, nil, c.classify(ctx, path, err, true)
		}
		freeZ = sync.OnceFunc(func() { r.sem.Release(zn) })
	}
	return c.readHolding(ctx, path, zr, -1, first, size)
}

// Reading bounds the total bytes of upstream answers being read at once,
// so that a few huge answers cannot take the process's memory.
type Reading struct {
	sem  *semaphore.Weighted
	size int64
}

// NewReading returns a bound of n bytes.
func NewReading(n int64) *Reading { return &Reading{sem: semaphore.NewWeighted(n), size: n} }

var processReading = NewReading(DefaultReadingBytes)

var errUpstreamTimeout = errors.New("upstream timeout")

func (c *Client) classify(ctx context.Context, path string, err error, sent bool) error {
	// url.Error's message holds the full URL, which has no secret in it
	// (credentials travel in the body and the Authorization header).
	switch {
	case errors.Is(context.Cause(ctx), errUpstreamTimeout):
		return &Error{Kind: Timeout, Sent: sent, Err: fmt.Errorf("calling %s: no answer within %s", path, c.cfg.Timeout)}
	case ctx.Err() != nil:
		return &Error{Kind: Canceled, Sent: sent, Err: fmt.Errorf("calling %s: %w", path, context.Canceled)}
	}
	return &Error{Kind: Unreachable, Sent: sent, Err: fmt.Errorf("calling %s: %w", path, err)}
}
