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
)

// ErrNotPoller: Publish was refused because this node does not hold the
// polling lease (it expired, or another node took it over).
var ErrNotPoller = errors.New("cluster: this node does not hold the polling lease")

// streamMaxLen bounds the event stream (approximately: MAXLEN ~). A node
// that falls further behind gets an EventSync instead of the events.
const streamMaxLen = 10000

// streamBlock is how long one stream read waits for events.
const streamBlock = time.Second

// lastIDFile holds, in Config.Dir, the id of the last event applied.
const lastIDFile = "cluster-stream-id"

// publishScript appends an event only while the publisher holds the
// polling lease (fencing: a poller that lost its lease, paused past its
// expiry, cannot publish), and records a generation change as the
// cluster's current generation and setup in the same step, so that a
// joining node's snapshot always matches a position in the stream.
// KEYS: lease, stream, gen, setup. ARGV: lease value, event JSON, "1" if
// a generation change, generation, setup, max length.
var publishScript = redis.NewScript(`
if ARGV[1] ~= '' and redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return redis.error_reply('NOTPOLLER this node does not hold the polling lease')
end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[6], '*', 'data', ARGV[2])
if ARGV[3] == '1' then
  redis.call('SET', KEYS[3], ARGV[4])
  redis.call('SET', KEYS[4], ARGV[5])
end
return id
`)

// Publish appends ev, as published by this node, to the cluster's event
// stream. The poller's changes (EventGeneration, EventInvalidate) are
// fenced: they fail with ErrNotPoller unless this node holds the polling
// lease. An operator's EventPurge may come from any node. Publish fails
// with another error when Redis is out of reach: the edge then applies its
// change locally only.
func (c *Cluster) Publish(ctx context.Context, ev edge.Event) error {
	var v string
	switch ev.Kind {
	case edge.EventPurge:
	case edge.EventGeneration, edge.EventInvalidate:
		if v = c.lead.value(); v == "" {
			return ErrNotPoller
		}
	default:
		return fmt.Errorf("cluster: publishing an event of kind %q: only generation, invalidate and purge are published", ev.Kind)
	}
	ev.Node = c.node
	data, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	isGen := "0"
	if ev.Kind == edge.EventGeneration {
		isGen = "1"
	}
	octx, cancel := c.op(ctx)
	defer cancel()
	keys := []string{c.key("leader"), c.key("events"), c.key("gen"), c.key("setup")}
	err = publishScript.Run(octx, c.rdb, keys, v, data, isGen, ev.Generation, ev.Setup, streamMaxLen).Err()
	if err != nil && strings.HasPrefix(err.Error(), "NOTPOLLER") {
		c.report(nil)
		c.lead.set("", time.Time{})
		return ErrNotPoller
	}
	return c.reportFor(ctx, err)
}

// streamState is the handler of the other nodes' events.
type streamState struct {
	mu      sync.Mutex
	fn      func(edge.Event)
	started bool
	last    string // id of the last event applied ("" before the first join)
}

// Subscribe sets fn as the handler of the cluster's events and starts
// reading them. fn runs on one goroutine, in stream order, for the events
// of the other nodes; it also gets an EventSync with the cluster's current
// generation and setup whenever this node joins: at start, after Redis was
// out of reach, and when it fell so far behind that events it missed were
// trimmed away. A node that restarts (same Dir) and whose last event is
// still in the stream first gets the events it missed, then the EventSync.
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
	for c.ctx.Err() == nil {
		if d := c.downs.Load(); !joined || d != downs {
			downs = d
			l, err := c.join(last)
			if err != nil {
				c.reportFor(c.ctx, err)
				c.pause(c.cfg.Heartbeat)
				continue
			}
			last, joined = l, true
		}
		ctx, cancel := context.WithTimeout(c.ctx, streamBlock+c.cfg.OpTimeout)
		res, err := c.bulk.XRead(ctx, &redis.XReadArgs{Streams: []string{c.key("events"), last}, Count: 100, Block: streamBlock}).Result()
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
func (c *Cluster) pause(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-c.ctx.Done():
	case <-t.C:
	}
}

// join delivers what this node missed since last: the events still in the
// stream when there is no gap, then an EventSync with the cluster's
// generation and setup as of the stream's tail. It returns the id to read
// on from.
func (c *Cluster) join(last string) (string, error) {
	ctx, cancel := context.WithTimeout(c.ctx, time.Second)
	defer cancel()
	var gen, setup *redis.StringCmd
	var first, tail *redis.XMessageSliceCmd
	_, err := c.bulk.TxPipelined(ctx, func(p redis.Pipeliner) error {
		gen = p.Get(ctx, c.key("gen"))
		setup = p.Get(ctx, c.key("setup"))
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
		fn(sync)
	}
	c.saveLastID(to)
	return to, nil
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
