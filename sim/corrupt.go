package sim

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"
)

// corruptState is the /_sim/corrupt fault: the next Count tnseb calls run
// as usual (an order is created), but their answer is spoiled on the way
// out, as a broken proxy or connection would:
//
//	cut        status 200, half the body, then the connection is closed
//	html       status 200, an HTML page that contains "statusCode":"success"
//	duplicate  the JSON answer with two extra redirectUrl keys, off-site
//	redirects  the JSON answer with off-site redirect URLs under other
//	           spellings and depths (RedirectURL at the top, redirectUrl
//	           in every nested object), each key once
//	hangup     the connection is closed with no answer at all
//
// POST /_sim/corrupt {"mode":"cut","count":1}; count 0 clears it.
type corruptState struct {
	mu    sync.Mutex
	Mode  string `json:"mode"`
	Count int    `json:"count"`
}

func (s *Server) postCorrupt(w http.ResponseWriter, r *http.Request) {
	var c struct {
		Mode  string `json:"mode"`
		Count int    `json:"count"`
	}
	if json.NewDecoder(r.Body).Decode(&c) != nil || c.Count < 0 {
		writeError(w, r, http.StatusBadRequest, "bad_request", `want {"mode":"cut|html|duplicate|redirects|hangup","count":N}`)
		return
	}
	switch c.Mode {
	case "cut", "html", "duplicate", "redirects", "hangup":
	default:
		if c.Count > 0 {
			writeError(w, r, http.StatusBadRequest, "bad_request", "mode must be cut, html, duplicate, redirects or hangup")
			return
		}
	}
	s.corrupt.mu.Lock()
	s.corrupt.Mode, s.corrupt.Count = c.Mode, c.Count
	s.corrupt.mu.Unlock()
	writeJSON(w, r, http.StatusOK, c)
}

// takeCorrupt returns a writer that spoils this call's answer, or nil. The
// request is cloned without Accept-Encoding so that the answer is plain.
func (s *Server) takeCorrupt(w http.ResponseWriter, r *http.Request, key string) (*corruptWriter, *http.Request) {
	if key == "auth" {
		return nil, r
	}
	s.corrupt.mu.Lock()
	defer s.corrupt.mu.Unlock()
	if s.corrupt.Count == 0 {
		return nil, r
	}
	s.corrupt.Count--
	r = r.Clone(r.Context())
	r.Header.Del("Accept-Encoding")
	return &corruptWriter{w: w, mode: s.corrupt.Mode, header: http.Header{}}, r
}

type corruptWriter struct {
	w      http.ResponseWriter
	mode   string
	header http.Header
	status int
	body   bytes.Buffer
}

func (c *corruptWriter) Header() http.Header { return c.header }
func (c *corruptWriter) WriteHeader(code int) {
	if c.status == 0 {
		c.status = code
	}
}
func (c *corruptWriter) Write(b []byte) (int, error) { c.WriteHeader(200); return c.body.Write(b) }

// finish sends the spoiled answer once the method has run.
func (c *corruptWriter) finish() {
	body := c.body.Bytes()
	rc := http.NewResponseController(c.w) // c.w may be a logging wrapper
	hangup := func() {
		if conn, _, err := rc.Hijack(); err == nil {
			conn.Close()
		}
	}
	switch c.mode {
	case "hangup":
		hangup()
	case "cut":
		c.w.Header().Set("Content-Type", "application/json")
		c.w.WriteHeader(http.StatusOK)
		c.w.Write(body[:len(body)/2])
		rc.Flush()
		hangup()
	case "html":
		c.w.Header().Set("Content-Type", "text/html")
		c.w.Write([]byte(`<html><body>{"statusCode":"success"} maintenance</body></html>`))
	case "duplicate":
		if i := bytes.IndexByte(body, '{'); i >= 0 {
			body = append(append(append([]byte{}, body[:i+1]...), `"redirectUrl":"https://evil.example/1","redirectUrl":"https://evil.example/2",`...), body[i+1:]...)
		}
		c.w.Header().Set("Content-Type", "application/json")
		c.w.WriteHeader(c.status)
		c.w.Write(body)
	case "redirects":
		// Every "{" that opens an object gets a key of its own; the top
		// one is spelled RedirectURL. A "{" inside a string is rare in
		// these answers and would only add text to it.
		var out []byte
		for i, b := range body {
			out = append(out, b)
			if b == '{' && i+1 < len(body) {
				key := "redirectUrl"
				if len(out) == 1 {
					key = "RedirectURL"
				}
				sep := ","
				if body[i+1] == '}' {
					sep = ""
				}
				out = append(out, `"`+key+`":"https://evil.example/`+strconv.Itoa(i)+`"`+sep...)
			}
		}
		c.w.Header().Set("Content-Type", "application/json")
		c.w.WriteHeader(c.status)
		c.w.Write(out)
	}
}
