package stress

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Summary is the figures of a stress run, as shown to people (and printed
// with --json).
type Summary struct {
	Mode     Mode
	Key      string
	Hold     time.Duration // 0 when a user COMMAND was the job
	MinHold  time.Duration // the runs' --min-hold, 0 if none
	Launched int           // processes launched (N)
	Ran      int
	Refused  int
	Failed   int
	Overlaps int

	LaunchSpread time.Duration // first process start to last
	Wall         time.Duration // gate opened to last exit
	// WaitP50 and WaitP99 are percentiles of launch-to-critical-section
	// time over the runs that held the lock (queue mode's wait in line).
	WaitP50, WaitP99 time.Duration

	// Floor, if measured, is the same launch of N trivial processes
	// (`true`): the cost of process start-up alone.
	Floor *Floor

	// Interrupted is set when the stress was stopped (a signal) before
	// all processes ended on their own: the verdict then means nothing.
	Interrupted bool

	Verdict Verdict
}

// Floor is the launch of N trivial processes, for comparison.
type Floor struct {
	Command string
	N       int
	Spread  time.Duration
	Wall    time.Duration
}

// FloorOf summarises a launch of trivial processes.
func FloorOf(command string, l *Launched) *Floor {
	return &Floor{Command: command, N: len(l.Procs), Spread: l.Spread(), Wall: l.Wall()}
}

// Summarize computes the summary of a result.
func Summarize(cfg Config, r *Result) Summary {
	s := Summary{
		Mode: cfg.Mode, Key: cfg.Key, MinHold: cfg.MinHold, Launched: len(r.Records),
		Overlaps: r.Verdict.Overlaps, Verdict: r.Verdict,
	}
	if len(cfg.Command) == 0 {
		s.Hold = cfg.Hold
	}
	if r.Launched != nil {
		s.LaunchSpread, s.Wall = r.Launched.Spread(), r.Launched.Wall()
	}
	var waits []time.Duration
	for _, rec := range r.Records {
		switch rec.Outcome {
		case Ran:
			s.Ran++
		case Refused:
			s.Refused++
		default:
			s.Failed++
		}
		if rec.Held {
			waits = append(waits, rec.Wait())
		}
	}
	s.WaitP50, s.WaitP99 = percentile(waits, 50), percentile(waits, 99)
	return s
}

// percentile returns the p-th percentile of ds by the nearest-rank method,
// 0 for no values.
func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := (p*len(s) + 99) / 100 // ceil(p/100 * n)
	return s[max(rank, 1)-1]
}

// maxShown bounds the problems WriteText lists.
const maxShown = 20

// WriteText writes the summary for people.
func (s Summary) WriteText(w io.Writer) error {
	var b strings.Builder
	what := fmt.Sprintf("hold %v", s.Hold)
	if s.Hold == 0 {
		what = "COMMAND as the job"
	}
	if s.MinHold > 0 {
		what += fmt.Sprintf(", min hold %v", s.MinHold)
	}
	fmt.Fprintf(&b, "dlock stress: %d processes, %s mode, %s, key %q\n", s.Launched, s.Mode, what, s.Key)
	fmt.Fprintf(&b, "  launched  %6d   launch spread %v\n", s.Launched, round(s.LaunchSpread))
	fmt.Fprintf(&b, "  ran       %6d\n", s.Ran)
	fmt.Fprintf(&b, "  refused   %6d\n", s.Refused)
	fmt.Fprintf(&b, "  failed    %6d\n", s.Failed)
	fmt.Fprintf(&b, "  overlaps  %6d   (must be 0)\n", s.Overlaps)
	fmt.Fprintf(&b, "  wall time %v\n", round(s.Wall))
	if s.Mode == Queue {
		fmt.Fprintf(&b, "  wait      p50 %v, p99 %v (launch to start of the critical section)\n",
			round(s.WaitP50), round(s.WaitP99))
	}
	if f := s.Floor; f != nil {
		fmt.Fprintf(&b, "  floor     %d x %s: launch spread %v, wall time %v (process start-up alone)\n",
			f.N, f.Command, round(f.Spread), round(f.Wall))
	}
	switch {
	case s.Interrupted:
		b.WriteString("verdict: none, the stress was interrupted\n")
	case s.Verdict.Clean:
		minHold := ""
		if s.MinHold > 0 {
			minHold = fmt.Sprintf(", starts at least %v apart", s.MinHold)
		}
		fmt.Fprintf(&b, "verdict: clean: no overlaps, fences strictly increasing%s, all %d processes accounted for, none failed\n", minHold, s.Launched)
	default:
		fmt.Fprintf(&b, "verdict: FAILED, %d problem(s):\n", len(s.Verdict.Problems))
		for i, p := range s.Verdict.Problems {
			if i == maxShown {
				fmt.Fprintf(&b, "  ... and %d more (see --report)\n", len(s.Verdict.Problems)-maxShown)
				break
			}
			fmt.Fprintf(&b, "  - %s: %s\n", p.Kind, p.Message)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// round shortens a duration for display.
func round(d time.Duration) time.Duration {
	switch {
	case d >= 10*time.Second:
		return d.Round(10 * time.Millisecond)
	case d >= time.Second:
		return d.Round(time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

// MarshalJSON writes durations as milliseconds with the unit in the name.
func (s Summary) MarshalJSON() ([]byte, error) {
	type floor struct {
		Command  string  `json:"command"`
		N        int     `json:"n"`
		SpreadMS float64 `json:"launch_spread_ms"`
		WallMS   float64 `json:"wall_ms"`
	}
	out := struct {
		Mode           Mode    `json:"mode"`
		Key            string  `json:"key"`
		HoldMS         float64 `json:"hold_ms,omitempty"`
		MinHoldMS      float64 `json:"min_hold_ms,omitempty"`
		Launched       int     `json:"launched"`
		Ran            int     `json:"ran"`
		Refused        int     `json:"refused"`
		Failed         int     `json:"failed"`
		Overlaps       int     `json:"overlaps"`
		LaunchSpreadMS float64 `json:"launch_spread_ms"`
		WallMS         float64 `json:"wall_ms"`
		WaitP50MS      float64 `json:"wait_p50_ms"`
		WaitP99MS      float64 `json:"wait_p99_ms"`
		Floor          *floor  `json:"floor,omitempty"`
		Interrupted    bool    `json:"interrupted,omitempty"`
		Verdict        Verdict `json:"verdict"`
	}{
		Mode: s.Mode, Key: s.Key, HoldMS: ms(s.Hold), MinHoldMS: ms(s.MinHold), Launched: s.Launched, Ran: s.Ran,
		Refused: s.Refused, Failed: s.Failed, Overlaps: s.Overlaps,
		LaunchSpreadMS: ms(s.LaunchSpread), WallMS: ms(s.Wall),
		WaitP50MS: ms(s.WaitP50), WaitP99MS: ms(s.WaitP99), Interrupted: s.Interrupted, Verdict: s.Verdict,
	}
	if f := s.Floor; f != nil {
		out.Floor = &floor{Command: f.Command, N: f.N, SpreadMS: ms(f.Spread), WallMS: ms(f.Wall)}
	}
	return json.Marshal(out)
}

// WriteReport writes records as JSON lines, one per run, in run order.
func WriteReport(w io.Writer, records []Record) error {
	enc := json.NewEncoder(w)
	for _, r := range records {
		if err := enc.Encode(r); err != nil {
			return fmt.Errorf("stress: report: %w", err)
		}
	}
	return nil
}
