package session

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

var testSecret = []byte("0123456789abcdef0123456789abcdef")

func mustCodec(t testing.TB, secret []byte, name string) *cookieCodec {
	t.Helper()
	c, err := newCookieCodec(secret, name)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestCookieRoundTrip(t *testing.T) {
	c := mustCodec(t, testSecret, "s360_session")
	now := time.Unix(1_800_000_000, 0)
	v, err := c.encode([]byte(`{"s":"sub"}`), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.decode(v, now)
	if err != nil || string(got) != `{"s":"sub"}` {
		t.Fatalf("decode = %q, %v", got, err)
	}
	// Two seals of the same payload differ (random nonce).
	v2, _ := c.encode([]byte(`{"s":"sub"}`), now.Add(time.Hour))
	if v == v2 {
		t.Fatal("same value sealed twice gave the same cookie")
	}
}

func TestCookieRejects(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	c := mustCodec(t, testSecret, "s360_session")
	good, err := c.encode([]byte("payload"), now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := base64.RawURLEncoding.DecodeString(good)

	t.Run("tampered", func(t *testing.T) {
		for i := range raw {
			b := bytes.Clone(raw)
			b[i] ^= 0x01
			if _, err := c.decode(base64.RawURLEncoding.EncodeToString(b), now); !errors.Is(err, errCookieInvalid) {
				t.Fatalf("byte %d flipped: err = %v", i, err)
			}
		}
	})
	t.Run("expired", func(t *testing.T) {
		if _, err := c.decode(good, now.Add(time.Hour)); !errors.Is(err, errCookieExpired) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("wrong key", func(t *testing.T) {
		other := mustCodec(t, []byte("another secret of at least 32 bytes!"), "s360_session")
		if _, err := other.decode(good, now); !errors.Is(err, errCookieInvalid) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("other cookie", func(t *testing.T) {
		// A state cookie must never pass for a session cookie.
		state := mustCodec(t, testSecret, "s360_session_state")
		if _, err := state.decode(good, now); !errors.Is(err, errCookieInvalid) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("truncated", func(t *testing.T) {
		for n := 0; n < len(good); n++ {
			if _, err := c.decode(good[:n], now); err == nil {
				t.Fatalf("prefix of %d chars accepted", n)
			}
		}
	})
	t.Run("garbage", func(t *testing.T) {
		for _, g := range []string{"", "x", "!!!!", strings.Repeat("A", 100), strings.Repeat("A", 20000), "AQ", good + "A"} {
			if _, err := c.decode(g, now); err == nil {
				t.Fatalf("%q accepted", g)
			}
		}
	})
}

func TestDecodeSecret(t *testing.T) {
	b32 := bytes.Repeat([]byte{0xfe}, 32)
	for _, tc := range []struct {
		in   string
		want []byte
		ok   bool
	}{
		{in: base64.StdEncoding.EncodeToString(b32), want: b32, ok: true},
		{in: base64.RawURLEncoding.EncodeToString(b32), want: b32, ok: true},
		{in: "this-raw-secret-is-exactly-32-ch", want: []byte("this-raw-secret-is-exactly-32-ch"), ok: true},
		{in: "short", ok: false},
		{in: "", ok: false},
		// base64 of 16 bytes is 24 characters: too short either way.
		{in: base64.StdEncoding.EncodeToString(b32[:16]), ok: false},
	} {
		got, err := decodeSecret(tc.in)
		if (err == nil) != tc.ok || (tc.ok && !bytes.Equal(got, tc.want)) {
			t.Errorf("decodeSecret(%q) = %x, %v", tc.in, got, err)
		}
	}
}

func FuzzDecodeCookie(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	c := mustCodec(f, testSecret, "s360_session")
	payload := []byte(`{"s":"sub","x":1}`)
	good, err := c.encode(payload, now.Add(time.Hour))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add("")
	f.Add("AQ")
	f.Fuzz(func(t *testing.T, v string) {
		got, err := c.decode(v, now)
		// Only the sealed value itself may open (base64 may spell it
		// differently, so compare what it opens to).
		if err == nil && !bytes.Equal(got, payload) {
			t.Fatalf("forged cookie %q opened to %q", v, got)
		}
	})
}
