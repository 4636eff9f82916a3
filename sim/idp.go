package sim

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/xml"
	"errors"
	"fmt"
	"html/template"
	"io"
	"log"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/crewjam/saml"
	"github.com/crewjam/saml/samlidp"
	"golang.org/x/crypto/bcrypt"
)

// The buyer account seeded in the shop's IdP.
const (
	BuyerLogin    = "buyer"
	BuyerPassword = "buyer-password"
	BuyerEmail    = "buyer@example.com"
	BuyerName     = "Ada Buyer"
)

// IdPConfig configures the shop's SAML identity provider.
type IdPConfig struct {
	// URL is where the IdP is served, e.g. http://127.0.0.1:8081/saml.
	URL string
	// SPMetadata is the website's SP metadata URL; it is fetched when the
	// SP first sends a login, so the website may start after the simulator.
	SPMetadata string
	// Logger receives samlidp's log; default: none.
	Logger *log.Logger
}

// IdP is the shop acting as SAML 2.0 identity provider ("S-360 as IdP"),
// with one seeded buyer. It signs its assertions with a key made at start.
type IdP struct {
	prefix string
	srv    *samlidp.Server
	spURL  string

	mu sync.Mutex
	sp *saml.EntityDescriptor
}

// NewIdP builds the IdP.
func NewIdP(cfg IdPConfig) (*IdP, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("idp url %q: want an absolute URL", cfg.URL)
	}
	if cfg.Logger == nil {
		cfg.Logger = log.New(io.Discard, "", 0)
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "s360sim shop IdP"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(10 * 365 * 24 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, _ := x509.ParseCertificate(der)
	srv, err := samlidp.New(samlidp.Options{URL: *u, Key: key, Certificate: cert, Store: &samlidp.MemoryStore{}, Logger: cfg.Logger})
	if err != nil {
		return nil, err
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(BuyerPassword), bcrypt.MinCost)
	if err != nil {
		return nil, err
	}
	if err := srv.Store.Put("/users/"+BuyerLogin, samlidp.User{Name: BuyerLogin, HashedPassword: hash, Email: BuyerEmail, CommonName: BuyerName}); err != nil {
		return nil, err
	}
	idp := &IdP{prefix: strings.TrimRight(u.Path, "/"), srv: srv, spURL: cfg.SPMetadata}
	srv.IDP.ServiceProviderProvider = idp
	srv.IDP.AssertionMaker = shopAttributes{}
	srv.IDP.WantAuthnRequestsSigned = true
	return idp, nil
}

// GetServiceProvider knows one SP: the website, whose metadata is fetched
// on first use (and again when an unknown entity asks, in case it changed).
func (i *IdP) GetServiceProvider(_ *http.Request, id string) (*saml.EntityDescriptor, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.sp == nil || i.sp.EntityID != id {
		sp, err := i.fetchSP()
		if err != nil {
			return nil, fmt.Errorf("%w: %w", os.ErrNotExist, err)
		}
		i.sp = sp
	}
	if i.sp.EntityID != id {
		return nil, os.ErrNotExist
	}
	return i.sp, nil
}

func (i *IdP) fetchSP() (*saml.EntityDescriptor, error) {
	if i.spURL == "" {
		return nil, errors.New("no SP metadata URL configured")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, i.spURL, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("SP metadata: %s", resp.Status)
	}
	var sp saml.EntityDescriptor
	if err := xml.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&sp); err != nil {
		return nil, err
	}
	return &sp, nil
}

// shopAttributes adds the attributes s360edge reads by default (email,
// displayName) to samlidp's standard ones.
type shopAttributes struct{}

func (shopAttributes) MakeAssertion(req *saml.IdpAuthnRequest, s *saml.Session) error {
	s.CustomAttributes = append(s.CustomAttributes,
		saml.Attribute{Name: "email", Values: []saml.AttributeValue{{Value: s.UserEmail}}},
		saml.Attribute{Name: "displayName", Values: []saml.AttributeValue{{Value: s.UserCommonName}}})
	return saml.DefaultAssertionMaker{}.MakeAssertion(req, s)
}

// Wrap serves the IdP under its URL's path and passes the rest to next.
//
// samlidp's own login form posts the AuthnRequest back without the
// HTTP-Redirect signature, which it then refuses; so a buyer without a
// session at the shop gets this form instead, which logs in and returns to
// the signed request.
func (i *IdP) Wrap(next http.Handler) http.Handler {
	idp := http.StripPrefix(i.prefix, i.srv)
	sso, signin := i.prefix+"/sso", i.prefix+"/signin"
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == sso && r.Method == http.MethodGet && !hasCookie(r, "session"):
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			_ = loginForm.Execute(w, map[string]string{"Action": signin, "Back": r.URL.RequestURI()})
		case r.URL.Path == signin && r.Method == http.MethodPost:
			i.signin(w, r)
		case strings.HasPrefix(r.URL.Path, i.prefix+"/"):
			idp.ServeHTTP(w, r)
		case strings.HasPrefix(r.URL.Path, "/shop/"):
			if a := i.account(r); a != nil {
				r = r.WithContext(withShopAccount(r.Context(), a))
			}
			next.ServeHTTP(w, r)
		default:
			next.ServeHTTP(w, r)
		}
	})
}

var loginForm = template.Must(template.New("login").Parse(`<html><head><title>Shop login</title></head><body>` +
	`<p>{{.Toast}}</p><form method="post" action="{{.Action}}">` +
	`<input type="text" name="user" placeholder="user" value="" />` +
	`<input type="password" name="password" placeholder="password" value="" />` +
	`<input type="hidden" name="back" value="{{.Back}}" />` +
	`<input type="submit" value="Log In" /></form></body></html>`))

// account returns the buyer of the request's unexpired IdP session, or nil.
// The session is samlidp's (its cookie and store), so a login for the
// website and a single logout are what the shop pages see.
func (i *IdP) account(r *http.Request) *shopAccount {
	c, err := r.Cookie("session")
	if err != nil || c.Value == "" {
		return nil
	}
	var s saml.Session
	// The ID check keeps a crafted cookie value (a path to another record
	// of the store) from being read as a session.
	if i.srv.Store.Get("/sessions/"+c.Value, &s) != nil || s.ID != c.Value || !time.Now().Before(s.ExpireTime) {
		return nil
	}
	return &shopAccount{Login: s.UserName, Email: s.UserEmail, Name: s.UserCommonName}
}

func hasCookie(r *http.Request, name string) bool {
	c, err := r.Cookie(name)
	return err == nil && c.Value != ""
}

// signin checks the buyer's password with samlidp's login endpoint and, on
// success, passes its session cookie on and returns to the sign-on request.
func (i *IdP) signin(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, "bad form", http.StatusBadRequest)
		return
	}
	back := r.PostForm.Get("back")
	if !strings.HasPrefix(back, i.prefix+"/sso?") {
		http.Error(w, "bad return target", http.StatusBadRequest)
		return
	}
	login := r.Clone(r.Context())
	login.URL.Path = "/login"
	rec := httptest.NewRecorder()
	i.srv.ServeHTTP(rec, login)
	cookies := rec.Result().Cookies()
	if len(cookies) == 0 {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		_ = loginForm.Execute(w, map[string]string{"Action": r.URL.Path, "Back": back, "Toast": "Invalid username or password"})
		return
	}
	for _, c := range cookies {
		http.SetCookie(w, c)
	}
	http.Redirect(w, r, back, http.StatusSeeOther)
}
