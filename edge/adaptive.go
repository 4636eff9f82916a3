package edge

import (
	"encoding/json"
	"errors"

	"go.uber.org/zap"

	"github.com/s360edge/s360edge/budget"
	"github.com/s360edge/s360edge/cachestore"
)

// metaLimit holds the budget's learned limits (the institution's and its
// methods', budget.Learned), so that a restart does not relearn them
// through 509s.
const metaLimit = "budget.limit"

// keepLearnedLimit restores the gate's learned limit from the store and
// persists every later adjustment.
func (e *Edge) keepLearnedLimit() {
	g := e.opts.Gate
	if g == nil {
		return
	}
	var l budget.Learned
	switch b, err := e.store.GetMeta(metaLimit); {
	case err == nil && json.Unmarshal(b, &l) == nil:
		g.Restore(l)
	case err != nil && !errors.Is(err, cachestore.ErrNotFound):
		e.opts.Logger.Warn("reading the learned upstream limit failed; starting from rate_limit", zap.Error(err))
	}
	g.OnAdjust(func(l budget.Learned) {
		b, _ := json.Marshal(l)
		if err := e.store.PutMeta(metaLimit, b); err != nil {
			e.opts.Logger.Warn("storing the learned upstream limit failed", zap.Error(err))
		}
	})
}
