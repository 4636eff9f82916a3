package samlsp

import (
	"errors"
	"fmt"
	"time"

	"github.com/crewjam/saml"
	csamlsp "github.com/crewjam/saml/samlsp"
)

// maxReplays bounds a process's record of the assertions it accepted:
// more logins than that within an assertion's life (a few minutes) are
// refused until the oldest expire, rather than let one be replayed.
const maxReplays = 100_000

// NewLocalReplays is a process's record of the assertions it accepted,
// each kept until it expires (Config.Replays). It forgets them when the
// process ends; a caller that reloads its config keeps one for the process
// and gives it to every SP it makes.
func NewLocalReplays() saml.AssertionReplayCache { return csamlsp.NewMemoryReplayCache(maxReplays) }

// SharedReplays is the record of the assertions accepted by every node of
// a cluster (Config.Shared).
type SharedReplays interface {
	// ConsumeAssertion records id as accepted until until, when the
	// assertion expires: replayed when some node recorded it first, an
	// error when the record cannot be reached.
	ConsumeAssertion(id string, until time.Time) (replayed bool, err error)
}

// ErrReplaysUnavailable: the cluster's record of the accepted assertions
// cannot be reached. The assertion is refused (503): accepting it could
// accept it a second time, on another node.
var ErrReplaysUnavailable = errors.New("the record of accepted assertions cannot be reached")

// replays checks an assertion against this process's record, then the
// cluster's: refused if either has it, and recorded in both.
type replays struct {
	local  saml.AssertionReplayCache
	shared SharedReplays
}

func (r replays) Consume(id string, until time.Time) error {
	if err := r.local.Consume(id, until); err != nil {
		return err
	}
	replayed, err := r.shared.ConsumeAssertion(id, until)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrReplaysUnavailable, err)
	}
	if replayed {
		return saml.ErrAssertionReplayed
	}
	return nil
}

// replayCache is the record the ACS checks assertions against:
// Config.Replays (else the SP's own), and Config.Shared with it when set.
func (s *SP) replayCache() saml.AssertionReplayCache {
	local := s.cfg.Replays
	if local == nil {
		local = s.replays
	}
	if s.cfg.Shared == nil {
		return local
	}
	return replays{local, s.cfg.Shared}
}
