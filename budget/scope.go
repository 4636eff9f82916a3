package budget

import (
	"slices"
	"time"

	"go.uber.org/zap"
)

// Scope is what a pushback pauses: the narrowest part of the traffic that
// explains it.
type Scope int

const (
	ScopeCall        Scope = iota // a call without a cache key, refused once: nothing paused
	ScopeKey                      // one cache key (method and parameters)
	ScopeMethod                   // every key of one method
	ScopeInstitution              // every call of the institution but orders
)

var scopeNames = [...]string{"call", "key", "method", "institution"}

func (s Scope) String() string {
	if s >= 0 && int(s) < len(scopeNames) {
		return scopeNames[s]
	}
	return "scope?"
}

// ScopeCounts counts pauses started, by scope.
type ScopeCounts struct {
	Key         uint64 `json:"key"`
	Method      uint64 `json:"method"`
	Institution uint64 `json:"institution"`
}

// Bounds on the pause state: refusals are remembered for one window, and a
// flood of refused keys pauses their method instead of growing the map.
const (
	maxRefusals  = 256
	maxKeyPauses = 4096
)

type refusal struct {
	at          time.Time
	method, key string
}

type methodPause struct {
	until   time.Time
	backoff time.Duration // last pause without Retry-After; 0 after a success
}

// reply is an answer S-360 gave that was not a pushback.
type reply struct {
	at     time.Time
	method string
}

type scopes struct {
	answers  []reply   // the last window's answers that were not pushbacks, oldest first
	refusals []refusal // the last window's pushbacks, oldest first
	keys     map[string]time.Time
	methods  map[string]*methodPause
	counts   ScopeCounts
}

// PushbackCall reports a 509/429 S-360 gave to c and picks the narrowest
// scope that explains it: c's key; its method once two of the method's
// keys (or two keyless calls) were refused within a window, or when the
// method's calls in the window were at or within a twentieth of the limit
// learned for it; the whole institution once calls of two methods were
// refused within a window, or when the window's count was at or within a
// twentieth of the effective limit.
//
// A refusal of a method or of the institution teaches that scope's limit
// (see learnLocked; both when the method made most of the window's
// calls): the limit drops to 0.9 × the calls S-360 answered in the
// window, and holds the calls from then on. Such a refusal pauses nothing,
// unless it carries a Retry-After, which pauses the scope that long. A
// refusal no learned limit explains (adaptive off, or the limit already
// at or below what the refusal teaches) pauses the scope: a key
// FirstPause, a method or the institution with an exponential backoff.
// A pushback on a scope already paused, or one that came before any call
// was granted under the lowered limit, is the echo of a call in flight:
// it may lengthen a pause to its Retry-After, nothing more. It returns the
// scope chosen.
func (b *Budget) PushbackCall(c Call, retryAfter time.Duration) Scope {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	scope := b.scopeLocked(now, c)
	b.pushbackLocked(now, c, retryAfter, scope)
	return scope
}

// answeredLocked records an answer to a call of method that was not a
// pushback.
func (b *Budget) answeredLocked(now time.Time, method string) {
	b.pruneAnswersLocked(now)
	b.scopes.answers = append(b.scopes.answers, reply{now, method})
	b.lateAnswerLocked(now, method)
}

func (b *Budget) pruneAnswersLocked(now time.Time) {
	a := b.scopes.answers
	cut := now.Add(-b.cfg.Window)
	i := 0
	for i < len(a) && !a[i].at.After(cut) {
		i++
	}
	b.scopes.answers = a[i:]
}

// acceptedLocked is the number of calls S-360 answered without pushback
// in the window ending now, all of them and those of method: its own
// counts when it began to refuse. The calls granted are no measure of
// it: many may still be in flight.
func (b *Budget) acceptedLocked(now time.Time, method string) (total, ofMethod int) {
	b.pruneAnswersLocked(now)
	for _, x := range b.scopes.answers {
		if method != "" && x.method == method {
			ofMethod++
		}
	}
	return len(b.scopes.answers), ofMethod
}

// scopeLocked records the refusal and picks its scope.
func (b *Budget) scopeLocked(now time.Time, c Call) Scope {
	s := &b.scopes
	cut := now.Add(-b.cfg.Window)
	i := 0
	for i < len(s.refusals) && !s.refusals[i].at.After(cut) {
		i++
	}
	s.refusals = append(s.refusals[:0], s.refusals[i:]...)
	if len(s.refusals) >= maxRefusals {
		s.refusals = append(s.refusals[:0], s.refusals[1:]...)
	}
	past := s.refusals
	s.refusals = append(s.refusals, refusal{now, c.Method, c.Key})

	switch {
	case now.Before(b.pausedUntil):
		return ScopeInstitution
	case b.usedLocked(now) >= b.lim.calls-max(1, b.lim.calls/20):
		return ScopeInstitution
	}
	if mp := s.methods[c.Method]; mp != nil && now.Before(mp.until) {
		return ScopeMethod
	}
	if ml := b.adaptive.methods[c.Method]; ml != nil && b.methodCallsLocked(c.Method, now) >= ml.eff-max(1, ml.eff/20) {
		return ScopeMethod
	}
	otherKeys := false
	for _, r := range past {
		if r.method != c.Method {
			return ScopeInstitution
		}
		otherKeys = otherKeys || r.key == "" || r.key != c.Key
	}
	switch {
	case otherKeys:
		return ScopeMethod
	case c.Key == "":
		return ScopeCall
	}
	if len(s.keys) >= maxKeyPauses {
		for k, until := range s.keys {
			if !now.Before(until) {
				delete(s.keys, k)
			}
		}
		if len(s.keys) >= maxKeyPauses {
			return ScopeMethod
		}
	}
	return ScopeKey
}

func (b *Budget) pushbackLocked(now time.Time, c Call, retryAfter time.Duration, scope Scope) {
	b.pushbacks++
	b.adaptive.lastRefusal = now
	if ml := b.adaptive.methods[c.Method]; ml != nil {
		ml.refusedAt = now
	}
	s := &b.scopes
	var until time.Time
	switch scope {
	case ScopeInstitution:
		// An echo of a pause teaches nothing: S-360 refused a call sent
		// before it.
		if !now.Before(b.pausedUntil) && b.learnLocked(now, c.Method, scope) && retryAfter <= 0 {
			return
		}
		if !b.pauseInstitutionLocked(now, retryAfter) {
			return
		}
		s.counts.Institution++
		until = b.pausedUntil
	case ScopeMethod:
		if mp := s.methods[c.Method]; (mp == nil || !now.Before(mp.until)) && b.learnLocked(now, c.Method, scope) && retryAfter <= 0 {
			b.releaseProbeLocked(now)
			return
		}
		if s.methods == nil {
			s.methods = make(map[string]*methodPause)
		}
		mp := s.methods[c.Method]
		if mp == nil {
			mp = new(methodPause)
			s.methods[c.Method] = mp
		}
		echo := now.Before(mp.until)
		d := retryAfter
		if d <= 0 && !echo {
			mp.backoff = min(max(2*mp.backoff, b.cfg.FirstPause), b.cfg.MaxPause)
			d = mp.backoff
		}
		if u := now.Add(min(d, b.cfg.MaxPause)); u.After(mp.until) {
			mp.until = u
		}
		if echo {
			return
		}
		s.counts.Method++
		until = mp.until
	case ScopeKey:
		if s.keys == nil {
			s.keys = make(map[string]time.Time)
		}
		d := retryAfter
		if d <= 0 {
			d = b.cfg.FirstPause
		}
		old := s.keys[c.Key]
		u := now.Add(min(d, b.cfg.MaxPause))
		if u.After(old) {
			s.keys[c.Key] = u
		}
		if now.Before(old) {
			return
		}
		s.counts.Key++
		until = u
	default:
		b.releaseProbeLocked(now)
		b.cfg.Logger.Warn("S-360 refused a call (509/429); nothing paused until another call is refused",
			zap.String("scope", scope.String()), zap.String("method", c.Method))
		return
	}
	if scope != ScopeInstitution {
		b.releaseProbeLocked(now)
	}
	b.cfg.Logger.Warn("S-360 refused a call (509/429): pausing upstream calls",
		zap.String("scope", scope.String()), zap.String("method", c.Method), zap.Time("until", until))
}

// pausedLocked is the key or method pause c falls under, if any.
func (b *Budget) pausedLocked(c Call, now time.Time) (time.Time, Scope) {
	if c.Key != "" {
		if until, ok := b.scopes.keys[c.Key]; ok && now.Before(until) {
			return until, ScopeKey
		}
	}
	if mp := b.scopes.methods[c.Method]; mp != nil && now.Before(mp.until) {
		return mp.until, ScopeMethod
	}
	return time.Time{}, ScopeCall
}

// methodSuccessLocked ends a method's backoff once its pause is over.
func (b *Budget) methodSuccessLocked(method string, now time.Time) {
	if mp := b.scopes.methods[method]; mp != nil && !now.Before(mp.until) {
		delete(b.scopes.methods, method)
	}
}

func (b *Budget) pausedNowLocked(now time.Time) (keys int, methods []string) {
	for k, until := range b.scopes.keys {
		if now.Before(until) {
			keys++
		} else {
			delete(b.scopes.keys, k)
		}
	}
	for m, mp := range b.scopes.methods {
		if now.Before(mp.until) {
			methods = append(methods, m)
		}
	}
	slices.Sort(methods)
	return keys, methods
}

// releaseProbeLocked lets another probe go when the one out was refused
// for its key or method: that says nothing about the institution.
func (b *Budget) releaseProbeLocked(now time.Time) {
	if b.probing && !b.probeUntil.IsZero() {
		b.probeUntil = time.Time{}
		b.dispatchLocked(now)
	}
}
