package live

import (
	"errors"
	"net/http"
	"os"
	"strconv"
	"time"
)

var (
	opening   = []byte("retry: " + strconv.Itoa(int(Retry/time.Millisecond)) + "\n: s360edge live availability\n\n")
	heartbeat = []byte(": heartbeat\n\n")
)

// Serve streams s's events to w as text/event-stream: the headers and a
// retry line at once, then each event as it comes, and a comment line
// after every Heartbeat. It returns when the client goes away, when s ends
// (closed, dropped, or its hub closed) or when a write fails; a write that
// takes WriteTimeout drops s as a slow reader. The caller closes s.
func Serve(w http.ResponseWriter, r *http.Request, s *Sub) {
	rc := StartStream(w)
	// A connection the client keeps for its next request must not keep
	// the last write's deadline.
	defer rc.SetWriteDeadline(time.Time{})
	if !write(rc, w, s, opening) {
		return
	}
	tick := time.NewTicker(Heartbeat)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-s.done:
			return
		case <-tick.C:
			if !write(rc, w, s, heartbeat) {
				return
			}
		case ev := <-s.events:
			// What else is waiting goes in the same write.
			for more := true; more; {
				select {
				case next := <-s.events:
					ev = append(ev[:len(ev):len(ev)], next...)
				default:
					more = false
				}
			}
			if !write(rc, w, s, ev) {
				return
			}
		}
	}
}

// StartStream answers 200 text/event-stream, unbuffered by proxies, and
// returns w's controller for Write.
func StartStream(w http.ResponseWriter) *http.ResponseController {
	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Accel-Buffering", "no") // nginx in front: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	return http.NewResponseController(w)
}

// Write writes b to a stream and flushes it within WriteTimeout. A writer
// without deadlines (HTTP/3, tests) writes without one. The caller resets
// the deadline when the stream ends.
func Write(rc *http.ResponseController, w http.ResponseWriter, b []byte) error {
	_ = rc.SetWriteDeadline(time.Now().Add(WriteTimeout))
	_, err := w.Write(b)
	if err == nil {
		if err = rc.Flush(); errors.Is(err, http.ErrNotSupported) {
			err = nil
		}
	}
	return err
}

// HeartbeatLine is the comment line written to an idle stream.
func HeartbeatLine() []byte { return heartbeat }

// write is Write for s's stream: false when the stream is over; a write
// that took WriteTimeout drops s as a slow reader.
func write(rc *http.ResponseController, w http.ResponseWriter, s *Sub, b []byte) bool {
	err := Write(rc, w, b)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		s.drop()
	}
	return err == nil
}
