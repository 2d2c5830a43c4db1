package bench

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is everything one run produced, as `dlock bench --json` prints it.
type Report struct {
	Machine Machine  `json:"machine"`
	Backend string   `json:"backend,omitempty"` // URL, password redacted
	Floors  []Floor  `json:"floors,omitempty"`
	Results []Result `json:"results"`
	// Notes are caveats found during the run (a floor that could not be
	// measured, a counter that is not available).
	Notes []string `json:"notes,omitempty"`
}

// TableOptions shapes [WriteText].
type TableOptions struct {
	// Subjects adds a column naming each row's subject (for comparisons).
	Subjects bool
	// Ours tells which subjects are dlock's; when set, a "vs best peer"
	// column shows each row's ops/s divided by the best other subject's in
	// the same group and scenario.
	Ours func(subject string) bool
}

// WriteText writes r for people: the machine, floors, one table row per
// result and the legend.
func WriteText(w io.Writer, r Report, opt TableOptions) error {
	var b strings.Builder
	fmt.Fprintf(&b, "machine: %s\n", r.Machine)
	if r.Backend != "" {
		fmt.Fprintf(&b, "backend: %s\n", r.Backend)
	}
	for _, f := range r.Floors {
		fmt.Fprintf(&b, "floor:   %s %s pairs/s, p50 %s p99 %s per pair: %s\n",
			f.Name, Count3(f.PairsPerSecond), Dur(f.Latency.P50), Dur(f.Latency.P99), f.Detail)
	}
	b.WriteString("\n")
	if _, err := io.WriteString(w, b.String()); err != nil {
		return err
	}
	if err := WriteTable(w, r.Results, opt); err != nil {
		return err
	}
	for _, n := range r.Notes {
		if _, err := fmt.Fprintf(w, "note: %s\n", n); err != nil {
			return err
		}
	}
	return nil
}

// WriteTable writes results as an aligned table followed by its legend.
func WriteTable(w io.Writer, results []Result, opt TableOptions) error {
	var counters []string
	for _, r := range results {
		for name := range r.PerOp {
			if !slices.Contains(counters, name) {
				counters = append(counters, name)
			}
		}
	}
	slices.Sort(counters)
	best := bestPeer(results, opt.Ours)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	var head []string
	if opt.Subjects {
		head = append(head, "group", "subject")
	}
	head = append(head, "scenario", "workers", "ops/s")
	if opt.Ours != nil {
		head = append(head, "vs best peer")
	}
	head = append(head, "p50", "p99", "max", "fairness", "violations")
	for _, c := range counters {
		head = append(head, c+"/op")
	}
	fmt.Fprintln(tw, strings.Join(head, "\t")+"\t")
	for _, r := range results {
		var row []string
		if opt.Subjects {
			row = append(row, r.Group, r.Subject)
		}
		row = append(row, string(r.Scenario), strconv.Itoa(r.Workers), Count3(r.PerSecond))
		if opt.Ours != nil {
			ratio := "-"
			if b, ok := best[groupScenario{r.Group, r.Scenario}]; ok && b > 0 {
				ratio = fmt.Sprintf("x%.2f", r.PerSecond/b)
			}
			row = append(row, ratio)
		}
		row = append(row, Dur(r.Latency.P50), Dur(r.Latency.P99), Dur(r.Latency.Max))
		if r.Scenario == Contended {
			row = append(row, fmt.Sprintf("%.2f (%d/%d)", r.Fairness, r.MinGrants, r.MaxGrants),
				strconv.FormatUint(r.Violations+r.FenceRegressions, 10))
		} else {
			row = append(row, "-", "-")
		}
		for _, c := range counters {
			if v, ok := r.PerOp[c]; ok {
				row = append(row, strconv.FormatFloat(v, 'f', 2, 64))
			} else {
				row = append(row, "-")
			}
		}
		fmt.Fprintln(tw, strings.Join(row, "\t")+"\t")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	legend := `
ops/s: acquire+release pairs per second (serial, parallel) or grants per second
  (contended); p50/p99/max: latency of a pair, or in contended the wait from
  calling Lock to the grant (max includes waits cut short by the end of the run);
fairness: fewest/most grants of any worker; violations: grants seen while
  another worker was inside, plus fences that did not grow (must be 0);
*/op: per pair or grant, where they can be counted: store operations, and
  the Redis server's CPU time (redis cpu µs).
`
	if opt.Ours != nil {
		legend += "vs best peer: ops/s divided by the best other library's in the same group and scenario.\n"
	}
	_, err := io.WriteString(w, legend)
	return err
}

type groupScenario struct {
	group    string
	scenario Scenario
}

// bestPeer returns the highest ops/s of subjects that are not ours, per
// group and scenario.
func bestPeer(results []Result, ours func(string) bool) map[groupScenario]float64 {
	best := map[groupScenario]float64{}
	if ours == nil {
		return best
	}
	for _, r := range results {
		if ours(r.Subject) {
			continue
		}
		k := groupScenario{r.Group, r.Scenario}
		best[k] = max(best[k], r.PerSecond)
	}
	return best
}

// Count3 formats a rate with thousands separators, rounded to an integer
// (to three significant digits below 100).
func Count3(v float64) string {
	if v < 100 {
		return sig3(v)
	}
	s := strconv.FormatInt(int64(math.Round(v)), 10)
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// Dur formats a duration to three significant digits (14.2µs, 1.05ms).
func Dur(d time.Duration) string {
	switch {
	case d <= 0:
		return "0"
	case d < time.Microsecond:
		return d.String()
	case d < time.Millisecond:
		return sig3(float64(d)/float64(time.Microsecond)) + "µs"
	case d < time.Second:
		return sig3(float64(d)/float64(time.Millisecond)) + "ms"
	}
	return sig3(d.Seconds()) + "s"
}

// sig3 formats v (>= 0) with three significant digits, never in exponent
// form; 999.6 rounds to "1000".
func sig3(v float64) string {
	switch {
	case v < 9.995:
		return strconv.FormatFloat(v, 'f', 2, 64)
	case v < 99.95:
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	return strconv.FormatFloat(v, 'f', 0, 64)
}
