package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/dlock-dev/dlock/internal/bench"
)

// serverCPU is a running count of the CPU time, in µs, of the server
// whose postmaster is pid, on Linux: the postmaster and its children (its
// backends, one per connection, and its helpers), from /proc. (Children
// are found by parent, not by process group: each calls setsid.) A running
// process's time is read from its schedstat (ns); that of children that
// have exited, from the postmaster's cutime and cstime (clock ticks).
// The count never goes down: a backend that exits between two readings
// moves its time from one place to the other, rounded down to a tick.
type serverCPU struct {
	pid  int
	mu   sync.Mutex
	last uint64
}

func (g *serverCPU) counter() bench.Counter {
	return bench.Counter{Name: counterPgCPU, Read: func(context.Context) (uint64, error) { return g.read() }}
}

func (g *serverCPU) read() (uint64, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, fmt.Errorf("peers: postgres cpu: %w", err)
	}
	var ns uint64
	found := false
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue // exited meanwhile
		}
		f, ok := statFields(stat)
		if !ok || (pid != g.pid && f.ppid != g.pid) {
			continue
		}
		sched, err := os.ReadFile("/proc/" + e.Name() + "/schedstat")
		if err != nil {
			continue
		}
		fields := bytes.Fields(sched)
		if len(fields) == 0 {
			continue
		}
		run, err := strconv.ParseUint(string(fields[0]), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("peers: postgres cpu: bad /proc/%d/schedstat", pid)
		}
		ns += run
		if pid == g.pid {
			found = true
			ns += f.childTicks * (1e9 / userHZ)
		}
	}
	if !found {
		return 0, fmt.Errorf("peers: postgres cpu: no process %d in /proc", g.pid)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	g.last = max(g.last, ns/1000)
	return g.last, nil
}

// userHZ is the unit of the times in /proc/PID/stat: 100 per second on
// every Linux that matters (sysconf(_SC_CLK_TCK)).
const userHZ = 100

type procStat struct {
	ppid       int
	childTicks uint64 // cutime + cstime: children that have been waited for
}

// statFields reads the parent and the children's CPU time from
// the text of /proc/PID/stat. The command name, the second field, is in
// parentheses and may hold spaces and parentheses itself: the fields are
// counted from the last ")".
func statFields(stat []byte) (procStat, bool) {
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return procStat{}, false
	}
	f := strings.Fields(string(stat[i+1:]))
	// From the field after the name: state, ppid, pgrp, ... utime (11),
	// stime (12), cutime (13), cstime (14).
	if len(f) < 15 {
		return procStat{}, false
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil {
		return procStat{}, false
	}
	cu, err1 := strconv.ParseUint(f[13], 10, 64)
	cs, err2 := strconv.ParseUint(f[14], 10, 64)
	if err1 != nil || err2 != nil {
		return procStat{}, false
	}
	return procStat{ppid: ppid, childTicks: cu + cs}, true
}
