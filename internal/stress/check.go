package stress

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/dlock-dev/dlock/internal/fence"
)

// Log is everything [Check] judges.
type Log struct {
	N       int      // processes launched; runs are numbered 0..N-1
	Mode    Mode     // exclusive or queue
	Records []Record // one per run, in any order
	// MinHold is the runs' --min-hold: successive critical sections must
	// start at least this far apart (less minHoldSlack).
	MinHold time.Duration

	// Resource is the fenced resource's accepted writes, in the order it
	// accepted them. If nil, the cross-check against it is skipped (a log
	// read back from a report has none).
	Resource []fence.Entry
}

// Kind classifies a [Problem].
type Kind string

// The kinds of problems Check reports.
const (
	KindOverlap     Kind = "overlap"     // two critical sections overlapped on the clock
	KindFence       Kind = "fence"       // fences of successive holders did not strictly increase
	KindUnaccounted Kind = "unaccounted" // a run has no record, two records, or an impossible one
	KindFailed      Kind = "failed"      // a run failed for a reason other than the lock
	KindRefused     Kind = "refused"     // queue mode: a run was refused instead of waiting
	KindNoHolder    Kind = "no-holder"   // no run held the lock at all
	KindResource    Kind = "resource"    // the fenced resource disagrees with the runs' own logs
	KindMinHold     Kind = "min-hold"    // two critical sections started within --min-hold of each other
)

// minHoldSlack is what a start may lack of --min-hold after the previous
// one: the key is kept from the previous grant's reply, which its job
// notes as its start only after dlock has started it (a fork and exec,
// slow with a thousand processes starting on two cores).
const minHoldSlack = time.Second

// Problem is one reason a verdict is not clean.
type Problem struct {
	Kind    Kind   `json:"kind"`
	Runs    []int  `json:"runs,omitempty"` // the runs involved
	Message string `json:"message"`
}

// Verdict is the outcome of [Check].
type Verdict struct {
	Clean    bool      `json:"clean"`    // no problems
	Overlaps int       `json:"overlaps"` // runs whose critical section overlapped an earlier one's (clock or resource)
	Problems []Problem `json:"problems,omitempty"`
}

// maxListed bounds how many run ids one aggregated problem lists.
const maxListed = 10

// Check judges a stress log. The verdict is clean only when:
//
//   - every run 0..N-1 has exactly one record, with a known outcome that
//     agrees with whether it held the lock;
//   - no run failed (refusals are the lock working, in exclusive mode);
//   - in queue mode no run was refused, and in either mode someone held
//     the lock;
//   - sorted by start, no critical section starts before an earlier one
//     has finished (all runs share one host's wall clock);
//   - in that order, fences strictly increase;
//   - with MinHold, in that order, each start is at least MinHold after
//     the one before, less a second ([minHoldSlack]);
//   - if Resource is given: every write came from a run that held the
//     lock, with that run's fence; no run wrote between another run's
//     start and finish entries; the order in which the resource accepted
//     the runs is the order of their start times (so a stepped clock cannot
//     hide an overlap); every run that ran wrote to it.
//
// Check is a pure function of log.
func Check(log Log) Verdict {
	var c checker
	c.accounting(log)
	held := c.held(log.Records)
	c.overlapsAndFences(held)
	if log.MinHold > 0 {
		c.minHold(held, log.MinHold)
	}
	if log.Resource != nil {
		c.resource(log.Resource, held)
	}
	v := Verdict{Problems: c.problems, Overlaps: len(c.overlapping)}
	v.Clean = len(v.Problems) == 0
	return v
}

type checker struct {
	problems    []Problem
	overlapping map[int]bool // runs found overlapping a predecessor
}

func (c *checker) add(kind Kind, runs []int, format string, args ...any) {
	c.problems = append(c.problems, Problem{Kind: kind, Runs: runs, Message: fmt.Sprintf(format, args...)})
}

func (c *checker) overlap(run int) {
	if c.overlapping == nil {
		c.overlapping = map[int]bool{}
	}
	c.overlapping[run] = true
}

// accounting checks that every run is there once and that its outcome
// makes sense, and reports failures and refusals.
func (c *checker) accounting(log Log) {
	seen := make(map[int]int, log.N)
	var outside, refused, holders []int
	for _, r := range log.Records {
		if r.Run < 0 || r.Run >= log.N {
			outside = append(outside, r.Run)
			continue
		}
		seen[r.Run]++
		if seen[r.Run] == 2 {
			c.add(KindUnaccounted, []int{r.Run}, "run %d has more than one record", r.Run)
		}
		if r.Held {
			holders = append(holders, r.Run)
		}
		switch r.Outcome {
		case Ran:
			if !r.Held {
				c.add(KindUnaccounted, []int{r.Run}, "run %d is recorded as ran but did not report holding the lock", r.Run)
			}
		case Refused:
			refused = append(refused, r.Run)
			if r.Held {
				c.add(KindUnaccounted, []int{r.Run}, "run %d is recorded as refused but reported holding the lock", r.Run)
			}
		case Failed:
			reason := r.Reason
			if reason == "" {
				reason = "exit status " + strconv.Itoa(r.ExitCode)
			}
			c.add(KindFailed, []int{r.Run}, "run %d failed: %s", r.Run, reason)
		default:
			c.add(KindUnaccounted, []int{r.Run}, "run %d has unknown outcome %q", r.Run, r.Outcome)
		}
	}
	if len(outside) > 0 {
		c.add(KindUnaccounted, outside, "%d records for runs outside 0..%d: %s", len(outside), log.N-1, listRuns(outside))
	}
	var missing []int
	for i := range log.N {
		if seen[i] == 0 {
			missing = append(missing, i)
		}
	}
	if len(missing) > 0 {
		c.add(KindUnaccounted, missing, "%d of %d runs are not accounted for: %s", len(missing), log.N, listRuns(missing))
	}
	if log.Mode == Queue && len(refused) > 0 {
		c.add(KindRefused, refused, "queue mode, yet %d runs were refused instead of waiting their turn: %s",
			len(refused), listRuns(refused))
	}
	if log.N > 0 && len(holders) == 0 {
		c.add(KindNoHolder, nil, "no run held the lock")
	}
}

// held returns the records of runs that held the lock, sorted by start
// (then finish, then run id, so the order is deterministic).
func (c *checker) held(records []Record) []Record {
	var held []Record
	for _, r := range records {
		if !r.Held {
			continue
		}
		if r.Start.IsZero() || r.Finish.Before(r.Start) {
			c.add(KindUnaccounted, []int{r.Run}, "run %d has impossible times: start %s, finish %s",
				r.Run, r.Start.Format(timeFormat), r.Finish.Format(timeFormat))
			continue
		}
		held = append(held, r)
	}
	slices.SortFunc(held, func(a, b Record) int {
		return cmp.Or(a.Start.Compare(b.Start), a.Finish.Compare(b.Finish), cmp.Compare(a.Run, b.Run))
	})
	return held
}

const timeFormat = "15:04:05.000000000"

// overlapsAndFences walks the holders in start order. A section that starts
// before the latest finish seen so far overlaps the section that finished
// last (not only its direct predecessor: a long section can cover several
// short ones).
func (c *checker) overlapsAndFences(held []Record) {
	var last Record // the holder with the latest finish so far
	for i, r := range held {
		if r.Fence == 0 {
			c.add(KindFence, []int{r.Run}, "run %d held the lock without a fence", r.Run)
		}
		if i == 0 {
			last = r
			continue
		}
		prev := held[i-1]
		if r.Start.Before(last.Finish) {
			c.overlap(r.Run)
			c.add(KindOverlap, []int{last.Run, r.Run},
				"run %d started at %s, %v before run %d finished at %s",
				r.Run, r.Start.Format(timeFormat), last.Finish.Sub(r.Start), last.Run, last.Finish.Format(timeFormat))
		}
		if r.Fence <= prev.Fence && r.Fence != 0 {
			c.add(KindFence, []int{prev.Run, r.Run},
				"run %d (fence %d) started after run %d (fence %d): fences must strictly increase",
				r.Run, r.Fence, prev.Run, prev.Fence)
		}
		if r.Finish.After(last.Finish) {
			last = r
		}
	}
}

// minHold checks that successive holders (sorted by start) started at
// least d apart, less minHoldSlack.
func (c *checker) minHold(held []Record, d time.Duration) {
	for i := 1; i < len(held); i++ {
		prev, r := held[i-1], held[i]
		if gap := r.Start.Sub(prev.Start); gap < d-minHoldSlack {
			c.add(KindMinHold, []int{prev.Run, r.Run},
				"run %d started %v after run %d, within --min-hold %v", r.Run, gap, prev.Run, d)
		}
	}
}

// resource cross-checks the fenced resource's log with the holders'
// records. held is sorted by start.
func (c *checker) resource(entries []fence.Entry, held []Record) {
	byRun := make(map[int]Record, len(held))
	for _, r := range held {
		byRun[r.Run] = r
	}
	open := -1 // the run whose start entry was seen and whose finish was not yet
	started := map[int]bool{}
	var order []int // runs in the order the resource accepted their first write
	for i, e := range entries {
		what, run, ok := parseEntry(string(e.Data))
		if !ok {
			c.add(KindResource, nil, "resource entry %d is not a stress write: %q", i, e.Data)
			continue
		}
		r, isHolder := byRun[run]
		switch {
		case !isHolder:
			c.add(KindResource, []int{run}, "resource accepted %q from run %d, which did not report holding the lock", e.Data, run)
		case r.Fence != e.Fence:
			c.add(KindResource, []int{run}, "resource accepted run %d's write with fence %d, but the run reported fence %d", run, e.Fence, r.Fence)
		}
		switch what {
		case "start":
			if started[run] {
				c.add(KindResource, []int{run}, "resource has two start entries from run %d", run)
				continue
			}
			started[run] = true
			order = append(order, run)
			// A run that never wrote its finish (lost lock, refused last
			// write) is closed by the next start.
			open = run
		case "finish":
			if run != open {
				c.overlap(run)
				inside := "no run"
				if open >= 0 {
					inside = "run " + strconv.Itoa(open)
				}
				c.add(KindResource, []int{run}, "resource accepted run %d's last write while %s was inside (entry %d)", run, inside, i)
			}
			open = -1
		}
	}
	var clock []int
	for _, r := range held {
		if started[r.Run] {
			clock = append(clock, r.Run)
		} else if r.Outcome == Ran {
			c.add(KindResource, []int{r.Run}, "run %d ran, but the resource has no write from it", r.Run)
		}
	}
	for i := range min(len(order), len(clock)) {
		if order[i] != clock[i] {
			c.add(KindResource, []int{order[i], clock[i]},
				"the resource accepted run %d as holder #%d, but by the clock run %d started #%d (was the wall clock stepped?)",
				order[i], i+1, clock[i], i+1)
			break // after one divergence every later position differs too
		}
	}
}

// parseEntry parses "start run=N" or "finish run=N".
func parseEntry(s string) (what string, run int, ok bool) {
	what, rest, found := strings.Cut(s, " run=")
	if !found || (what != "start" && what != "finish") {
		return "", 0, false
	}
	run, err := strconv.Atoi(rest)
	if err != nil {
		return "", 0, false
	}
	return what, run, true
}

// listRuns renders run ids, at most maxListed of them.
func listRuns(runs []int) string {
	var b strings.Builder
	for i, r := range runs {
		if i == maxListed {
			fmt.Fprintf(&b, " and %d more", len(runs)-maxListed)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.Itoa(r))
	}
	return b.String()
}
