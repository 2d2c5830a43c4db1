package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// RedisFloor measures a plain SET key + DEL key, two sequential round trips
// on one connection of c: what a pair (an acquire and a release) costs at
// the least over this network and server, with no script and no
// compare-and-delete.
func RedisFloor(ctx context.Context, c redis.UniversalClient, key string, d time.Duration) (Floor, error) {
	fl, err := MeasureFloor(ctx, "redis", "SET "+key+" + DEL "+key+" (two round trips)", d, func() error {
		if err := c.Set(ctx, key, "x", time.Minute).Err(); err != nil {
			return err
		}
		return c.Del(ctx, key).Err()
	})
	if err != nil {
		return Floor{}, fmt.Errorf("bench: redis floor: %w", err)
	}
	return fl, nil
}

// RedisCommands returns a Counter of the commands the Redis server behind c
// has executed, from INFO commandstats: the server's view of the work, the
// same for dlock and for libraries that are not dlock backends. Redis
// counts the commands a Lua script calls as well as the script itself, so
// an EVALSHA that runs GET and DEL counts 3; [RoundTrips] counts requests
// instead. It leaves out INFO itself and the commands a client sends when
// it opens a connection (HELLO, CLIENT, AUTH, SELECT). The count is
// server-wide: run on a server nothing else uses. For a single server only
// (a cluster client asks one node).
func RedisCommands(c redis.UniversalClient) Counter {
	return infoCounter(c, CounterRedisCmds, "commandstats", parseCommandStats)
}

// RedisCPU returns a Counter of the CPU time, in µs, that the Redis server
// behind c has used (INFO cpu: used_cpu_user + used_cpu_sys): what a
// subject's operations cost the server, with the system calls of its
// network I/O. Like [RedisCommands] it is server-wide and for a single
// server; it also holds the server's own housekeeping and the counters'
// INFO reads, a few µs per read.
func RedisCPU(c redis.UniversalClient) Counter {
	return infoCounter(c, CounterRedisCPU, "cpu", ParseCPU)
}

// infoCounter is a Counter read from one section of the server's INFO.
func infoCounter(c redis.UniversalClient, name, section string, parse func(string) (uint64, error)) Counter {
	return Counter{Name: name, Read: func(ctx context.Context) (uint64, error) {
		info, err := c.Info(ctx, section).Result()
		if err != nil {
			return 0, fmt.Errorf("bench: redis INFO %s: %w", section, err)
		}
		return parse(info)
	}}
}

// ParseCPU returns the server's CPU time in µs, used_cpu_user plus
// used_cpu_sys (given in seconds), from INFO cpu. Other lines, such as
// those of other sections, are left out.
func ParseCPU(info string) (uint64, error) {
	var micros float64
	found := 0
	for line := range strings.Lines(info) {
		name, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok || (name != "used_cpu_user" && name != "used_cpu_sys") {
			continue
		}
		sec, err := strconv.ParseFloat(v, 64)
		if err != nil || sec < 0 {
			return 0, fmt.Errorf("bench: INFO cpu: bad line %q", line)
		}
		micros += sec * 1e6
		found++
	}
	if found != 2 {
		return 0, errors.New("bench: INFO cpu: no used_cpu_user and used_cpu_sys")
	}
	return uint64(math.Round(micros)), nil
}

// RoundTrips adds a hook to c that counts the requests it sends (a
// pipeline counts once, INFO not at all) and returns a Counter of them:
// the round trips a subject makes over c, whatever library drives it.
// Pub/sub subscriptions use their own connection and are not counted.
func RoundTrips(c redis.UniversalClient) Counter {
	h := &roundTripHook{}
	c.AddHook(h)
	return Counter{Name: CounterRoundTrips, Read: func(context.Context) (uint64, error) { return h.n.Load(), nil }}
}

type roundTripHook struct{ n atomic.Uint64 }

func (h *roundTripHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *roundTripHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		if cmd.Name() != "info" { // the counters' own reads
			h.n.Add(1)
		}
		return next(ctx, cmd)
	}
}

func (h *roundTripHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		h.n.Add(1)
		return next(ctx, cmds)
	}
}

// connectionSetup lists commands go-redis sends on new connections, which
// say nothing about the locking protocol.
var connectionSetup = map[string]bool{"info": true, "hello": true, "client": true, "auth": true, "select": true}

// parseCommandStats sums the calls of every command in INFO commandstats
// but the connection set-up's.
func parseCommandStats(info string) (uint64, error) {
	stats, err := ParseCommandStats(info)
	if err != nil {
		return 0, err
	}
	var total uint64
	for name, st := range stats {
		name, _, _ = strings.Cut(name, "|")
		if !connectionSetup[name] {
			total += st.Calls
		}
	}
	return total, nil
}

// CommandStat is one command's line of INFO commandstats.
type CommandStat struct {
	Calls  uint64
	Micros uint64 // time the server spent in it; a script's includes what it ran
}

// ParseCommandStats returns each command's line of INFO commandstats,
// which look like
//
//	cmdstat_set:calls=3,usec=12,usec_per_call=4.00,rejected_calls=0,failed_calls=0
//
// by command name in lower case (sub-commands appear as client|setinfo).
// Other lines, such as those of other sections, are left out.
func ParseCommandStats(info string) (map[string]CommandStat, error) {
	stats := make(map[string]CommandStat)
	for line := range strings.Lines(info) {
		line = strings.TrimSpace(line)
		name, fields, ok := strings.Cut(line, ":")
		name, isCmd := strings.CutPrefix(name, "cmdstat_")
		if !ok || !isCmd {
			continue
		}
		var st CommandStat
		found := false
		for field := range strings.SplitSeq(fields, ",") {
			k, v, _ := strings.Cut(field, "=")
			var dst *uint64
			switch k {
			case "calls":
				dst, found = &st.Calls, true
			case "usec":
				dst = &st.Micros
			default:
				continue
			}
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return nil, fmt.Errorf("bench: INFO commandstats: bad line %q", line)
			}
			*dst = n
		}
		if !found {
			return nil, fmt.Errorf("bench: INFO commandstats: no calls= in %q", line)
		}
		stats[strings.ToLower(name)] = st
	}
	return stats, nil
}
