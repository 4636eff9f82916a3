package cluster

import (
	"errors"
	"time"
)

// Revoke marks session id as logged out on every node until until, when
// its cookie would have expired anyway.
func (c *Cluster) Revoke(id string, until time.Time) error {
	if id == "" {
		return errors.New("cluster: revoking a session: empty id")
	}
	ttl := time.Until(until)
	if ttl <= 0 {
		return nil // expired already: nothing left to refuse
	}
	ctx, cancel := c.op(c.ctx)
	defer cancel()
	return c.report(c.rdb.Set(ctx, c.key("revoked", id), "1", max(ttl, time.Millisecond)).Err())
}

// Revoked reports whether session id was revoked on any node. It fails
// when Redis is out of reach: the caller must then treat the session as
// unusable (fail closed), since a logout elsewhere cannot be ruled out.
func (c *Cluster) Revoked(id string) (bool, error) {
	ctx, cancel := c.op(c.ctx)
	defer cancel()
	n, err := c.rdb.Exists(ctx, c.key("revoked", id)).Result()
	if c.report(err) != nil {
		return false, err
	}
	return n > 0, nil
}
