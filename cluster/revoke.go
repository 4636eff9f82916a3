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

// ErrReplayed is ConsumeAssertion's answer for an assertion id another
// node (or this one) accepted already.
var ErrReplayed = errors.New("cluster: the assertion was accepted already")

// ConsumeAssertion records SAML assertion id as accepted until until, when
// the assertion expires, on every node: ErrReplayed when some node
// recorded it first. Like Revoked, it fails when Redis is out of reach;
// the caller must then refuse the assertion (fail closed), since its use
// on another node cannot be ruled out.
func (c *Cluster) ConsumeAssertion(id string, until time.Time) error {
	if id == "" {
		return errors.New("cluster: recording an assertion: empty id")
	}
	// Kept a second past its expiry: the nodes' clocks differ a little.
	ttl := max(time.Until(until), 0) + time.Second
	ctx, cancel := c.op(c.ctx)
	defer cancel()
	fresh, err := c.rdb.SetNX(ctx, c.key("saml", id), c.node, ttl).Result()
	if c.report(err) != nil {
		return err
	}
	if !fresh {
		return ErrReplayed
	}
	return nil
}
