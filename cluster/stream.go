package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"go.uber.org/zap"

	"github.com/s360edge/s360edge/edge"
	"github.com/s360edge/s360edge/internal/wait"
)

// ErrNotPoller: Publish was refused because this node does not hold the
// polling lease (it expired, or another node took it over).
var ErrNotPoller = fmt.Errorf("cluster: this node does not hold the polling lease (%w)", edge.ErrRefusedChange)

// ErrSuperseded: a generation change was refused because the cluster's
// setup value is no longer the one the change was seen from (ev.From):
// another node published a change since. The cluster's state wins; this
// node reconciles with it at its next heartbeat, and the poller reports
// whatever S-360 says at its next poll.
var ErrSuperseded = fmt.Errorf("cluster: the cluster's setup changed since this change was seen (%w)", edge.ErrRefusedChange)

// streamMaxLen bounds the event stream (approximately: MAXLEN ~). A node
// that falls further behind gets an EventSync instead of the events.
const streamMaxLen = 10000

// streamBlock is how long one stream read waits for events, at most: the
// reader reconciles with the cluster's state every heartbeat.
const streamBlock = time.Second

// lastIDFile holds, in Config.Dir, the id of the last event applied.
const lastIDFile = "cluster-stream-id"

// publishScript appends an event and writes, in the same step, the
// cluster's state it changes, so that a change is in the state exactly
// when it is in the stream, and a joining (or reconciling) node's snapshot
// matches a position in the stream.
//
//   - 'g', a generation change: applied only while the cluster's setup is
//     the one the change was seen from (ARGV[6]; or the cluster has none),
//     so that a change seen late (a retry after Redis was out of reach,
//     another node's) never takes the cluster back; a change to the value
//     the cluster already has is done, and appends nothing. Not fenced by
//     the polling lease: any node's change seen from the current value is
//     progress, and a node that decided alone while Redis was out of reach
//     would otherwise lose its change (and the catalog it refreshed) to a
//     poller that has not seen it yet.
//   - 'i', an invalidation: fenced by the polling lease (a poller that lost
//     its lease, paused past its expiry, cannot publish; the new poller
//     finds the change again from the reference date in Redis), and moves
//     the cluster's reference date forward (ARGV[7], fixed-width UTC: its
//     text order is its time order).
//   - 'p', an operator's purge, from any node.
//
// KEYS: lease, stream, gen, setup, ref. ARGV: kind, lease value, event
// JSON, max length, generation, from, reference. ARGV[8] the new setup.
// Returns the event's id, or 'same'.
var publishScript = redis.NewScript(`
if ARGV[1] == 'g' then
  local cur = redis.call('GET', KEYS[4])
  if cur == ARGV[8] then return 'same' end
  if cur and cur ~= ARGV[6] then
    return redis.error_reply('SUPERSEDED the cluster setup changed since')
  end
elseif ARGV[1] == 'i' and redis.call('GET', KEYS[1]) ~= ARGV[2] then
  return redis.error_reply('NOTPOLLER this node does not hold the polling lease')
end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'data', ARGV[3])
if ARGV[1] == 'g' then
  redis.call('SET', KEYS[3], ARGV[5])
  redis.call('SET', KEYS[4], ARGV[8])
elseif ARGV[1] == 'i' and ARGV[7] ~= '' then
  local ref = redis.call('GET', KEYS[5])
  if not ref or ARGV[7] > ref then redis.call('SET', KEYS[5], ARGV[7]) end
end
return id
`)

// Publish appends ev, as published by this node, to the cluster's event
// stream, and writes the cluster's state it changes in the same step
// (publishScript): the generation and setup value of an EventGeneration,
// the reference date of an EventInvalidate. An EventGeneration lands only
// while the cluster's setup is ev.From (or none), else ErrSuperseded; one
// to the setup the cluster already has is done at once. An
// EventInvalidate fails with ErrNotPoller unless this node holds the
// polling lease. An operator's EventPurge may come from any node. Publish
// fails with another error when Redis is out of reach.
func (c *Cluster) Publish(ctx context.Context, ev edge.Event) error {
	var kind, v string
	switch ev.Kind {
	case edge.EventPurge:
		kind = "p"
	case edge.EventGeneration:
		kind = "g"
	case edge.EventInvalidate:
		kind = "i"
		if v = c.lead.value(); v == "" {
			return ErrNotPoller
		}
	default:
		return fmt.Errorf("cluster: publishing an event of kind %q: only generation, invalidate and purge are published", ev.Kind)
	}
	from := ev.From
	ev.Node, ev.From = c.node, nil // the other nodes need not know
	data, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	octx, cancel := c.op(ctx)
	defer cancel()
	keys := []string{c.key("leader"), c.key("events"), c.key("gen"), c.key("setup"), c.key("ref")}
	id, err := publishScript.Run(octx, c.rdb, keys, kind, v, data, streamMaxLen, ev.Generation, from, ev.Reference, ev.Setup).Text()
	switch {
	case err != nil && strings.HasPrefix(err.Error(), "NOTPOLLER"):
		c.report(nil)
		c.lead.set("", time.Time{})
		return ErrNotPoller
	case err != nil && strings.HasPrefix(err.Error(), "SUPERSEDED"):
		c.report(nil)
		return ErrSuperseded
	case err != nil:
		return c.reportFor(ctx, err)
	}
	c.report(nil)
	if id != "same" {
		c.published(id)
	}
	return nil
}

// published records id as the newest event this node published: a state
// read before it (an older stream tail) is not handed to the node as a
// sync, so that the node is never moved back behind its own change. ""
// forgets it.
func (c *Cluster) published(id string) {
	c.stream.syncMu.Lock()
	defer c.stream.syncMu.Unlock()
	if id == "" || c.stream.published == "" || streamIDLess(c.stream.published, id) {
		c.stream.published = id
	}
}

// streamState is the handler of the other nodes' events.
type streamState struct {
	mu      sync.Mutex
	fn      func(edge.Event)
	started bool
	last    string // id of the last event applied ("" before the first join)

	// syncMu orders a sync's delivery with this node's publishes: the
	// newest event it published (published) is recorded under it.
	syncMu    sync.Mutex
	published string
}

// Subscribe sets fn as the handler of the cluster's events and starts
// reading them. fn runs on one goroutine, in stream order, for the events
// of the other nodes; it also gets an EventSync with the cluster's current
// generation, setup and reference date whenever this node joins (at start,
// after Redis was out of reach, and when it fell so far behind that events
// it missed were trimmed away) and then every heartbeat, so that a node
// whose state drifted from the cluster's (an event it failed to apply, a
// change it saw alone) reconciles within one heartbeat. A node that
// restarts (same Dir) and whose last event is still in the stream first
// gets the events it missed, then the EventSync. A sync read before an
// event this node published is not delivered (it would take the node back
// behind its own change).
func (c *Cluster) Subscribe(fn func(edge.Event)) {
	c.stream.mu.Lock()
	defer c.stream.mu.Unlock()
	c.stream.fn = fn
	if c.stream.started || c.ctx.Err() != nil {
		return
	}
	c.stream.started = true
	c.wg.Add(1)
	go c.readLoop()
}

func (c *Cluster) handler() func(edge.Event) {
	c.stream.mu.Lock()
	defer c.stream.mu.Unlock()
	return c.stream.fn
}

func (c *Cluster) readLoop() {
	defer c.wg.Done()
	last := c.loadLastID()
	joined := false
	var downs uint64
	var synced time.Time
	block := min(streamBlock, c.cfg.Heartbeat)
	for c.ctx.Err() == nil {
		if d := c.downs.Load(); !joined || d != downs || time.Since(synced) >= c.syncEvery {
			// A join when the node (re)joins, a reconcile every heartbeat:
			// the same catch-up and sync.
			if d != downs {
				// Redis may have restarted empty: ids of the events this
				// node published before say nothing of its new stream.
				c.published("")
			}
			downs = d
			l, err := c.join(last)
			if err != nil {
				c.reportFor(c.ctx, err)
				joined = false
				c.pause(c.cfg.Heartbeat)
				continue
			}
			last, joined, synced = l, true, time.Now()
		}
		ctx, cancel := context.WithTimeout(c.ctx, block+c.cfg.OpTimeout)
		res, err := c.bulk.XRead(ctx, &redis.XReadArgs{Streams: []string{c.key("events"), last}, Count: 100, Block: block}).Result()
		cancel()
		if errors.Is(err, redis.Nil) {
			continue // nothing new within the block time
		}
		if c.reportFor(c.ctx, err) != nil {
			joined = false
			c.pause(c.cfg.Heartbeat)
			continue
		}
		for _, s := range res {
			for _, m := range s.Messages {
				c.apply(m)
				last = m.ID
			}
		}
	}
}

// pause waits d, or less when the node closes.
func (c *Cluster) pause(d time.Duration) { wait.Sleep(c.ctx, d) }

// join delivers what this node missed since last: the events still in the
// stream when there is no gap, then an EventSync with the cluster's
// generation, setup and reference date as of the stream's tail. It
// returns the id to read on from.
func (c *Cluster) join(last string) (string, error) {
	ctx, cancel := context.WithTimeout(c.ctx, time.Second)
	defer cancel()
	var gen, setup, ref *redis.StringCmd
	var first, tail *redis.XMessageSliceCmd
	_, err := c.bulk.TxPipelined(ctx, func(p redis.Pipeliner) error {
		gen = p.Get(ctx, c.key("gen"))
		setup = p.Get(ctx, c.key("setup"))
		ref = p.Get(ctx, c.key("ref"))
		first = p.XRangeN(ctx, c.key("events"), "-", "+", 1)
		tail = p.XRevRangeN(ctx, c.key("events"), "+", "-", 1)
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return last, err
	}
	sync := edge.Event{Kind: edge.EventSync}
	if s, err := gen.Result(); err == nil {
		if sync.Generation, err = strconv.ParseUint(s, 10, 64); err != nil {
			c.log.Warn("cluster: the shared generation is not a number; syncing to none", zap.String("node", c.node))
		}
	}
	if b, err := setup.Bytes(); err == nil {
		sync.Setup = b
	}
	sync.Reference = ref.Val()
	to := "0-0" // an empty stream: read from its start, which is all new
	if ms := tail.Val(); len(ms) > 0 {
		to = ms[0].ID
	}
	if fs := first.Val(); last != "" && len(fs) > 0 && !streamIDLess(last, fs[0].ID) && !streamIDLess(to, last) {
		// No gap: every event after last is still there.
		for from := last; streamIDLess(from, to); {
			ms, err := c.bulk.XRangeN(ctx, c.key("events"), "("+from, to, 100).Result()
			if err != nil {
				return from, err
			}
			if len(ms) == 0 {
				break
			}
			for _, m := range ms {
				c.apply(m)
				from = m.ID
			}
		}
	}
	if fn := c.handler(); fn != nil {
		c.deliverSync(fn, sync, to)
	}
	c.saveLastID(to)
	return to, nil
}

// deliverSync hands sync, the state as of the stream's tail at, to fn
// unless this node has published an event after at since: then the state
// is older than this node's own change. Publish records its events under
// the same lock, so a change that lands while fn runs is recorded after
// fn has returned.
func (c *Cluster) deliverSync(fn func(edge.Event), sync edge.Event, at string) {
	c.stream.syncMu.Lock()
	defer c.stream.syncMu.Unlock()
	if p := c.stream.published; p != "" && streamIDLess(at, p) {
		return
	}
	fn(sync)
}

// apply hands one stream event to the handler unless this node published
// it, and records it as applied.
func (c *Cluster) apply(m redis.XMessage) {
	var ev edge.Event
	data, _ := m.Values["data"].(string)
	if err := json.Unmarshal([]byte(data), &ev); err != nil || ev.Kind == "" {
		c.log.Warn("cluster: skipping an unreadable stream event", zap.String("id", m.ID), zap.String("node", c.node))
	} else if ev.Node != c.node {
		if fn := c.handler(); fn != nil {
			fn(ev)
		}
	}
	c.saveLastID(m.ID)
}

var streamIDPattern = regexp.MustCompile(`^[0-9]{1,20}-[0-9]{1,20}$`)

// streamIDLess compares two stream ids ms-seq.
func streamIDLess(a, b string) bool {
	am, as := splitStreamID(a)
	bm, bs := splitStreamID(b)
	return am < bm || am == bm && as < bs
}

func splitStreamID(id string) (ms, seq uint64) {
	m, s, _ := strings.Cut(id, "-")
	ms, _ = strconv.ParseUint(m, 10, 64)
	seq, _ = strconv.ParseUint(s, 10, 64)
	return ms, seq
}

// loadLastID reads the saved id; anything unreadable counts as none (the
// node then syncs rather than replays).
func (c *Cluster) loadLastID() string {
	c.stream.mu.Lock()
	defer c.stream.mu.Unlock()
	if c.stream.last == "" && c.cfg.Dir != "" {
		b, err := os.ReadFile(filepath.Join(c.cfg.Dir, lastIDFile))
		if id := strings.TrimSpace(string(b)); err == nil && streamIDPattern.MatchString(id) {
			c.stream.last = id
		}
	}
	return c.stream.last
}

// saveLastID records id as applied, atomically (temp file + rename), so
// that a crash leaves the previous id or this one, never a torn file. No
// fsync: a catch-up of thousands of events must not cost as many disk
// flushes, and the worst a power loss can leave is an empty file, which
// loadLastID reads as none (the node then resyncs).
func (c *Cluster) saveLastID(id string) {
	c.stream.mu.Lock()
	defer c.stream.mu.Unlock()
	if c.stream.last == id {
		return
	}
	c.stream.last = id
	if c.cfg.Dir == "" {
		return
	}
	if err := writeFileAtomic(filepath.Join(c.cfg.Dir, lastIDFile), []byte(id+"\n")); err != nil {
		c.log.Warn("cluster: saving the last stream event applied; a restart will resync", zap.Error(err))
	}
}

func writeFileAtomic(path string, b []byte) error {
	// The node may join before the store has made its directory.
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+"-*")
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}
