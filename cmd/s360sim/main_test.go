package main

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParseFlags(t *testing.T) {
	addr, cfg, err := parseFlags(nil, io.Discard)
	if err != nil || addr != "127.0.0.1:8081" || cfg.Institution != "MOSA" || cfg.Operator != "MOSA_WEB" ||
		cfg.Secret != "sim-secret" || cfg.Partner != "s360edge" || cfg.Products != 12 || cfg.Seed != 1 ||
		cfg.TokenTTL != 30*time.Second || cfg.RateLimit != 180 || cfg.RateWindow != time.Minute ||
		cfg.CatalogFloor != 10*time.Minute || cfg.AvailabilityFloor != time.Minute || cfg.RateStatus != 509 ||
		cfg.Latency != 0 || cfg.CatalogLatency != 0 || cfg.SetupField != "lastSetupUpdate" || cfg.ErrorField != "statusDetail" ||
		cfg.LimitScope != "institution" {
		t.Errorf("defaults: %q %+v %v", addr, cfg, err)
	}
	_, cfg, err = parseFlags(strings.Fields("-rate-status 429 -rate-limit 0 -catalog-mb 10 -latency 2s -error-field statusMessage"), io.Discard)
	if err != nil || cfg.RateStatus != 429 || cfg.RateLimit != 0 || cfg.Products < 2400 || cfg.Products > 3300 ||
		cfg.Latency != 2*time.Second || cfg.ErrorField != "statusMessage" {
		t.Errorf("flags: %+v %v", cfg, err)
	}
	// The older pages' per-endpoint limit: 60 a minute unless -rate-limit says otherwise.
	if _, cfg, err = parseFlags(strings.Fields("-limit-scope endpoint"), io.Discard); err != nil || cfg.LimitScope != "endpoint" || cfg.RateLimit != 60 {
		t.Errorf("-limit-scope endpoint: %+v %v", cfg, err)
	}
	if _, cfg, err = parseFlags(strings.Fields("-rate-limit 20 -limit-scope endpoint"), io.Discard); err != nil || cfg.RateLimit != 20 {
		t.Errorf("-limit-scope endpoint -rate-limit 20: %+v %v", cfg, err)
	}
	for _, bad := range []string{"-rate-status 200", "-nope", "extra", "-products x", "-limit-scope method"} {
		if _, _, err := parseFlags(strings.Fields(bad), io.Discard); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

// syncBuffer collects the log concurrently written by the server.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	outR, outW := io.Pipe()
	var logs syncBuffer
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-addr", "127.0.0.1:0", "-secret", "s3cr3t-value"}, outW, &logs)
		outW.Close()
	}()
	line, err := bufio.NewReader(outR).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "s360sim listening on http://127.0.0.1:") {
		t.Fatalf("first line %q: %v", line, err)
	}
	go io.Copy(io.Discard, outR)
	base := strings.TrimSpace(strings.TrimPrefix(line, "s360sim listening on "))

	resp, err := http.Post(base+"/tnai/backend-apis/v1/auth", "application/json",
		strings.NewReader(`{"operator":"MOSA_WEB","partner":"t","secret":"s3cr3t-value"}`))
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("auth: %v %v", resp, err)
	}
	resp.Body.Close()
	resp, err = http.Get(base + "/api/1/redirect/cart?orderId=1&secret=topsecret")
	if err == nil {
		resp.Body.Close()
	}

	cancel()
	if err := <-done; err != nil {
		t.Fatalf("run: %v", err)
	}
	l := logs.String()
	if !strings.Contains(l, "POST /tnai/backend-apis/v1/auth 200 ") || !strings.Contains(l, "GET /api/1/redirect/cart 404 ") {
		t.Errorf("log lines missing:\n%s", l)
	}
	if strings.Contains(l, "s3cr3t") || strings.Contains(l, "topsecret") || strings.Contains(l, "eyJ") {
		t.Errorf("log leaks a secret:\n%s", l)
	}
}
