package caddymodule

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/crewjam/saml"
	"go.uber.org/zap"
)

func TestUnmarshalCaddyfileSAML(t *testing.T) {
	d := caddyfile.NewTestDispenser(`s360 {
		saml {
			idp_metadata    https://shop.example.com/saml/metadata
			entity_id       https://www.example.com/auth/saml/metadata
			cert            /etc/s360/sp.crt
			key             /etc/s360/sp.key
			user_attribute  uid
			email_attribute mail
			name_attribute  cn
			protect         /account /orders/*
			cookie_secret   {env.S360_COOKIE_KEY}
		}
	}`)
	var h Handler
	if err := h.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(h.SAML)
	want := `{"idp_metadata":"https://shop.example.com/saml/metadata","entity_id":"https://www.example.com/auth/saml/metadata",` +
		`"cert":"/etc/s360/sp.crt","key":"/etc/s360/sp.key","user_attribute":"uid","email_attribute":"mail","name_attribute":"cn",` +
		`"protect":["/account","/orders/*"],"cookie_secret":"{env.S360_COOKIE_KEY}"}`
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	var back SAML
	if err := json.Unmarshal(got, &back); err != nil || back.IDPMetadata != h.SAML.IDPMetadata || len(back.Protect) != 2 {
		t.Fatalf("JSON round trip: %+v %v", back, err)
	}
}

func TestUnmarshalCaddyfileSAMLErrors(t *testing.T) {
	for name, in := range map[string]string{
		"unknown subdirective": "s360 {\n saml {\n issuer x\n }\n}",
		"two values":           "s360 {\n saml {\n cert a b\n }\n}",
		"empty protect":        "s360 {\n saml {\n protect\n }\n}",
		"argument on block":    "s360 {\n saml x {\n }\n}",
	} {
		t.Run(name, func(t *testing.T) {
			var h Handler
			if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(in)); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

// spKeyPair writes a self-signed certificate and its key.
func spKeyPair(t *testing.T) (certFile, keyFile string) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sp"}, NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	der, _ := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	kder, _ := x509.MarshalPKCS8PrivateKey(k)
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "sp.crt"), filepath.Join(dir, "sp.key")
	_ = os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	_ = os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}

func TestSAMLLoginRouting(t *testing.T) {
	cert, key := spKeyPair(t)
	// The metadata file does not exist: a login that SAML serves answers
	// 503 provider_unavailable, proving the routing without an IdP.
	missing := filepath.Join(t.TempDir(), "idp.xml")
	secret := strings.Repeat("s", 32)
	tests := []struct {
		name       string
		oidc       bool
		target     string
		wantServed bool
		wantStatus int
	}{
		{"saml only, no provider", false, "/auth/login", true, http.StatusServiceUnavailable},
		{"saml only, provider=saml", false, "/auth/login?provider=saml", true, http.StatusServiceUnavailable},
		{"saml only, provider=oidc", false, "/auth/login?provider=oidc", true, http.StatusBadRequest},
		{"both, no provider goes to oidc", true, "/auth/login", false, 0},
		{"both, provider=oidc", true, "/auth/login?provider=oidc", false, 0},
		{"both, provider=saml", true, "/auth/login?provider=saml", true, http.StatusServiceUnavailable},
		{"both, unknown provider", true, "/auth/login?provider=ldap", true, http.StatusBadRequest},
		{"metadata endpoint", false, "/auth/saml/metadata", true, http.StatusOK},
		{"acs refuses GET", false, "/auth/saml/acs", true, http.StatusMethodNotAllowed},
		{"other path", false, "/account", false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &Handler{logger: zap.NewNop(), SAML: &SAML{IDPMetadata: missing, Cert: cert, Key: key, CookieSecret: secret}}
			if tt.oidc {
				h.OIDC = &OIDC{Issuer: "http://127.0.0.1:1", ClientID: "c", ClientSecret: "s", CookieSecret: secret}
				if err := h.provisionOIDC(); err != nil {
					t.Fatal(err)
				}
			}
			if err := h.provisionSAML(); err != nil {
				t.Fatal(err)
			}
			defer h.SAML.release()
			rec := httptest.NewRecorder()
			served := h.serveSAML(rec, httptest.NewRequest(http.MethodGet, tt.target, nil))
			if served != tt.wantServed || (served && rec.Code != tt.wantStatus) {
				t.Fatalf("served=%v status=%d %s; want served=%v status=%d", served, rec.Code, rec.Body, tt.wantServed, tt.wantStatus)
			}
		})
	}
}

func TestSAMLNeedsCookieSecretWithoutOIDC(t *testing.T) {
	cert, key := spKeyPair(t)
	h := &Handler{logger: zap.NewNop(), SAML: &SAML{IDPMetadata: "https://shop.example.com/md", Cert: cert, Key: key}}
	want := "saml: cookie_secret: missing; set it to at least 32 random characters, or base64 of 32 random bytes (openssl rand -base64 32), e.g. cookie_secret {env.S360_COOKIE_KEY}"
	if err := h.provisionSAML(); err == nil || err.Error() != want {
		t.Fatalf("err = %v, want %q", err, want)
	}
}

// The process's record of accepted assertions outlives a reload: the new
// config's SP refuses what the old one accepted.
func TestSAMLRecordSurvivesReload(t *testing.T) {
	dir, listen := t.TempDir(), freeListen(t)
	t.Cleanup(func() { caddy.Stop() })
	cert, key := spKeyPair(t)
	withSAML := func(calls int) map[string]any {
		h := handlerJSON(dir, calls, 0, "5s")
		h["saml"] = map[string]any{"idp_metadata": filepath.Join(dir, "idp.xml"), "cert": cert, "key": key, "cookie_secret": strings.Repeat("s", 32)}
		return h
	}
	record := func() saml.AssertionReplayCache {
		t.Helper()
		var got []saml.AssertionReplayCache
		samlReplays.Range(func(_, v any) bool {
			got = append(got, v.(pooledReplays).AssertionReplayCache)
			return true
		})
		if len(got) != 1 {
			t.Fatalf("%d records of accepted assertions, want 1 for the process", len(got))
		}
		return got[0]
	}
	if n, _ := samlReplays.References(replaysKey); n != 0 {
		t.Fatalf("%d uses of the record before the config loads", n)
	}
	if err := loadConfig(t, listen, withSAML(40)); err != nil {
		t.Fatal(err)
	}
	before := record()
	if err := before.Consume("id-accepted-before", time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if err := loadConfig(t, listen, withSAML(50)); err != nil {
		t.Fatalf("reload: %v", err)
	}
	if err := record().Consume("id-accepted-before", time.Now().Add(time.Minute)); !errors.Is(err, saml.ErrAssertionReplayed) {
		t.Fatalf("after the reload, an assertion accepted before: %v, want ErrAssertionReplayed", err)
	}
}
