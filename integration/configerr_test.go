package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The real binary refuses a saml block that cannot be safe or cannot work,
// at `validate` (as at `run` and `reload`), with an error naming the saml
// block's subdirective as written and saying what to write.
func TestSAMLConfigErrorsThroughTheBinary(t *testing.T) {
	cert, key := spKeyPair(t)
	for _, tc := range []struct {
		name, saml, want string
	}{
		{
			name: "idp_metadata over plain http from a host that is not loopback",
			saml: subBlock("saml", "idp_metadata http://shop.example.com/saml/metadata", "cert "+cert, "key "+key, "cookie_secret {env.S360_COOKIE_KEY}"),
			want: `s360: saml: idp_metadata: "http://shop.example.com/saml/metadata" is plain http to a host that is not loopback: ` +
				"anyone on the network path could swap the IdP certificate and log in as any buyer; write idp_metadata https://shop.example.com/saml/metadata",
		},
		{
			name: "no cookie_secret and no oidc block",
			saml: subBlock("saml", "idp_metadata https://shop.example.com/saml/metadata", "cert "+cert, "key "+key),
			want: "s360: saml: cookie_secret: missing; set it to at least 32 random characters, or base64 of 32 random bytes (openssl rand -base64 32), e.g. cookie_secret {env.S360_COOKIE_KEY}",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			config := filepath.Join(dir, "Caddyfile")
			// siteCaddyfile's %[1]s and %[2]s are startEdge's listen and
			// admin addresses; validate listens on neither.
			caddyfile := strings.NewReplacer("%[1]s", "127.0.0.1:9", "%[2]s", "off").Replace(
				siteCaddyfile("http://127.0.0.1:9", []string{tc.saml}, staticSite))
			if err := os.WriteFile(config, []byte(caddyfile), 0o600); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command(filepath.Join(binDir, "s360edge"), "validate", "--config", config, "--adapter", "caddyfile")
			cmd.Env = append(os.Environ(), "S360_OPERATOR="+simOperator, "S360_SECRET="+simSecret,
				"S360_COOKIE_KEY="+strings.Repeat("k", 32), "XDG_DATA_HOME="+dir, "HOME="+dir)
			b, err := cmd.CombinedOutput()
			out := strings.ReplaceAll(string(b), `\"`, `"`) // the error is also logged as JSON
			if err == nil || !strings.Contains(out, tc.want) {
				t.Fatalf("validate: %v, want an error containing\n%s\noutput:\n%s", err, tc.want, tail(out, 4000))
			}
			if strings.Contains(out, "oidc") || strings.Contains(out, strings.Repeat("k", 32)) {
				t.Fatalf("the error names oidc, or shows the cookie secret:\n%s", tail(out, 4000))
			}
		})
	}
}
