// Command s360sim serves the S-360 simulator of package sim. See the package
// documentation of github.com/s360edge/s360edge/sim for flags and endpoints.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/s360edge/s360edge/sim"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "s360sim:", err)
		stop()
		os.Exit(1)
	}
}

// parseFlags maps the command line onto sim.Config.
func parseFlags(args []string, stderr io.Writer) (addr string, cfg sim.Config, err error) {
	cfg = sim.DefaultConfig()
	fs := flag.NewFlagSet("s360sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&addr, "addr", "127.0.0.1:8081", "listen address")
	fs.StringVar(&cfg.Institution, "institution", cfg.Institution, "institution code (token sub)")
	fs.StringVar(&cfg.Operator, "operator", cfg.Operator, "operator accepted by the auth endpoint")
	fs.StringVar(&cfg.Secret, "secret", cfg.Secret, "operator secret")
	fs.StringVar(&cfg.Partner, "partner", cfg.Partner, "partner name (informational: any partner is accepted)")
	fs.IntVar(&cfg.Products, "products", cfg.Products, "number of generated products")
	fs.Int64Var(&cfg.Seed, "seed", cfg.Seed, "generator seed")
	mb := fs.Float64("catalog-mb", 0, "if > 0, pick the product count for a getCatalogDetailed body of about N MiB")
	fs.DurationVar(&cfg.TokenTTL, "token-ttl", cfg.TokenTTL, "lifetime of issued tokens")
	fs.IntVar(&cfg.RateLimit, "rate-limit", cfg.RateLimit, "calls per window for the institution, or for each endpoint with -limit-scope endpoint (default 60 then); 0 = off")
	fs.DurationVar(&cfg.RateWindow, "rate-window", cfg.RateWindow, "rate-limit window")
	fs.StringVar(&cfg.LimitScope, "limit-scope", cfg.LimitScope, "what -rate-limit counts: institution (every call, summed over every endpoint) or endpoint (each service separately)")
	fs.DurationVar(&cfg.CatalogFloor, "catalog-floor", cfg.CatalogFloor, "min interval per identical catalog request (0 = off)")
	fs.DurationVar(&cfg.AvailabilityFloor, "availability-floor", cfg.AvailabilityFloor, "min interval per identical availability request (0 = off)")
	fs.IntVar(&cfg.RateStatus, "rate-status", cfg.RateStatus, "HTTP status of rate-limited calls (509 or 429)")
	fs.DurationVar(&cfg.Latency, "latency", 0, "latency added to every tnseb call")
	fs.DurationVar(&cfg.CatalogLatency, "catalog-latency", 0, "extra latency of getCatalogDetailed and getCatalog")
	fs.IntVar(&cfg.InProgress, "in-progress", 0, "the first N getCatalogDetailed calls answer in_progress")
	fs.StringVar(&cfg.SetupField, "setup-field", cfg.SetupField, "JSON field of getLastSetupUpdate's timestamp")
	fs.StringVar(&cfg.ErrorField, "error-field", cfg.ErrorField, "envelope field carrying error codes such as error.order.availability")
	fs.StringVar(&cfg.SAMLSPMetadata, "saml-sp-metadata", "", "if set, serve the shop's SAML IdP at /saml for the SP with this metadata URL")
	if err = fs.Parse(args); err != nil {
		return "", cfg, err
	}
	if fs.NArg() > 0 {
		return "", cfg, fmt.Errorf("unexpected arguments %v", fs.Args())
	}
	if *mb > 0 {
		cfg.Products = sim.ProductsForMB(*mb, cfg.Seed)
	}
	switch cfg.LimitScope {
	case sim.ScopeInstitution:
	case sim.ScopeEndpoint:
		rateSet := false
		fs.Visit(func(f *flag.Flag) { rateSet = rateSet || f.Name == "rate-limit" })
		if !rateSet {
			cfg.RateLimit = sim.DefaultEndpointLimit
		}
	default:
		return "", cfg, fmt.Errorf("-limit-scope %q: want institution or endpoint", cfg.LimitScope)
	}
	if cfg.RateStatus < 400 || cfg.RateStatus > 599 {
		return "", cfg, fmt.Errorf("-rate-status %d: want an HTTP error status such as 509 or 429", cfg.RateStatus)
	}
	return addr, cfg, nil
}

// run serves until ctx is done (SIGINT or SIGTERM in main), then shuts down.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	addr, cfg, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listening: %w", err)
	}
	logger := log.New(stderr, "", log.LstdFlags|log.Lmicroseconds)
	handler := sim.New(cfg).Handler()
	if cfg.SAMLSPMetadata != "" {
		idp, err := sim.NewIdP(sim.IdPConfig{URL: "http://" + ln.Addr().String() + "/saml", SPMetadata: cfg.SAMLSPMetadata, Logger: logger})
		if err != nil {
			_ = ln.Close()
			return fmt.Errorf("saml idp: %w", err)
		}
		handler = idp.Wrap(handler)
		fmt.Fprintf(stdout, "shop SAML IdP at http://%s/saml/metadata; buyer login %q, password %q\n", ln.Addr(), sim.BuyerLogin, sim.BuyerPassword)
	}
	srv := &http.Server{Handler: logRequests(logger, handler), ReadHeaderTimeout: 10 * time.Second}
	logger.Printf("s360sim: institution %s, %d products, rate limit %d/%s per %s, status %d",
		cfg.Institution, cfg.Products, cfg.RateLimit, cfg.RateWindow, cfg.LimitScope, cfg.RateStatus)
	fmt.Fprintf(stdout, "s360sim listening on http://%s\n", ln.Addr())

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err = <-errc:
		return err
	case <-ctx.Done():
	}
	logger.Printf("s360sim: shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err = srv.Shutdown(shutdownCtx); err != nil {
		_ = srv.Close() // calls held by -latency
	}
	if err = <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// logRequests logs method, path (never the query: it may carry an order
// secret), status and duration. Headers and bodies are never logged.
func logRequests(l *log.Logger, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rec := &sim.StatusWriter{ResponseWriter: w}
		defer func() {
			l.Printf("%s %s %d %s", r.Method, r.URL.Path, rec.Code, time.Since(start).Round(time.Microsecond))
		}()
		h.ServeHTTP(rec, r)
	})
}
