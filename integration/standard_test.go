package integration

import (
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// readmeCaddyfile returns the first caddyfile block of README.md's
// "Caddyfile" section: the example a new user pastes.
func readmeCaddyfile(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(b), "\n## Caddyfile\n")
	if !ok {
		t.Fatal("README.md has no \"## Caddyfile\" section")
	}
	_, block, ok := strings.Cut(section, "```caddyfile\n")
	if block, _, ok2 := strings.Cut(block, "```"); ok && ok2 {
		return block
	}
	t.Fatal("README.md's Caddyfile section has no caddyfile block")
	return ""
}

// The binary is Caddy with its standard modules: README's example with
// what an ops team commonly adds (a file_system storage, basic_auth in
// front of the status page) adapts, validates and runs.
func TestReadmeCaddyfileWithStandardModules(t *testing.T) {
	base := readmeCaddyfile(t)
	for _, want := range []string{"s360 {", "upstream https://myinstit.ws.secutix.com", "reverse_proxy"} {
		if !strings.Contains(base, want) {
			t.Fatalf("README's Caddyfile example lacks %q:\n%s", want, base)
		}
	}
	s := startSim(t)
	dir := t.TempDir()
	hash, err := bcrypt.GenerateFromPassword([]byte("ops-password"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	storage := filepath.Join(dir, "caddy-storage")
	config := strings.NewReplacer(
		":8080 {\n", "http://%[1]s {\n\tbasic_auth /s360-status* {\n\t\tops "+string(hash)+"\n\t}\n\ts360_status /s360-status\n",
		"https://myinstit.ws.secutix.com", s.URL,
		"https://pfx-myinstit.shop.secutix.com", s.URL,
	).Replace(base)
	if !strings.HasPrefix(config, "{\n") {
		t.Fatalf("README's example does not start with a global options block:\n%s", base)
	}
	config = "{\n\tadmin %[2]s\n\tstorage file_system " + storage + "\n" + config[2:]

	// adapt, as a user checks a Caddyfile before a deploy.
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(strings.NewReplacer("%[1]s", "127.0.0.1:1", "%[2]s", "127.0.0.1:2").Replace(config)), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(binDir, "s360edge"), "adapt", "--config", path, "--adapter", "caddyfile")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("adapt: %v\n%s", err, out)
	}
	var adapted struct {
		Storage struct {
			Module string `json:"module"`
			Root   string `json:"root"`
		} `json:"storage"`
	}
	if err := json.Unmarshal(out, &adapted); err != nil || adapted.Storage.Module != "file_system" || adapted.Storage.Root != storage {
		t.Fatalf("adapted storage %+v (%v)", adapted.Storage, err)
	}
	if !strings.Contains(string(out), `"handler":"authentication"`) || !strings.Contains(string(out), `"handler":"s360"`) {
		t.Fatalf("adapted config lacks basic_auth or s360:\n%s", out)
	}

	// run it: basic_auth guards the status page, s360 answers the API.
	e := startEdge(t, config)
	resp, err := http.Get(e.URL + "/s360-status")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("status page without credentials: %d, want 401", resp.StatusCode)
	}
	req, _ := http.NewRequest("GET", e.URL+"/s360-status", nil)
	req.SetBasicAuth("ops", "ops-password")
	req.Header.Set("Accept", "text/html")
	if resp, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status page with credentials: %d, want 200", resp.StatusCode)
	}
	status, hdr, _ := post(t, e.URL+"/tnseb/backend-apis/catalogService/v1_33/getPOSConfig", `{}`)
	if status != 200 || hdr.Get("Cache-Status") != "s360edge; fwd=miss; stored" {
		t.Fatalf("getPOSConfig through the README's config: %d %q", status, hdr.Get("Cache-Status"))
	}
}
