package stress

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dlock-dev/dlock/internal/fence"
)

var t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

// at is t0 plus ms milliseconds.
func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

// ran is a run that held the lock from start to finish (ms after t0).
func ran(run int, fence uint64, start, finish int) Record {
	return Record{Run: run, Outcome: Ran, Launched: at(0), Exited: at(finish + 1), Held: true,
		Start: at(start), Finish: at(finish), Fence: fence}
}

func refused(run int) Record {
	return Record{Run: run, Outcome: Refused, Launched: at(0), Exited: at(2), ExitCode: ConflictExit,
		Reason: `"k" is locked by ...`}
}

// writes is what the resource holds after the given runs wrote, in order.
func writes(recs ...Record) []fence.Entry {
	var out []fence.Entry
	for _, r := range recs {
		out = append(out,
			fence.Entry{Fence: r.Fence, Data: []byte(startEntry(r.Run))},
			fence.Entry{Fence: r.Fence, Data: []byte(finishEntry(r.Run))})
	}
	return out
}

func TestCheck(t *testing.T) {
	a, b, c := ran(0, 5, 10, 20), ran(1, 6, 20, 30), ran(2, 9, 31, 40)
	tests := []struct {
		name string
		log  Log
		want []Kind // kinds of the problems, in order; none means clean
		runs [][]int
	}{
		{
			name: "clean exclusive",
			log:  Log{N: 4, Mode: Exclusive, Records: []Record{b, refused(3), a, c}, Resource: writes(a, b, c)},
		},
		{
			name: "clean queue",
			log:  Log{N: 3, Mode: Queue, Records: []Record{c, b, a}, Resource: writes(a, b, c)},
		},
		{
			name: "clean without the resource",
			log:  Log{N: 3, Mode: Queue, Records: []Record{a, b, c}},
		},
		{
			name: "overlap",
			log: Log{N: 3, Mode: Queue, Records: []Record{a, ran(1, 6, 19, 30), c},
				Resource: writes(a, ran(1, 6, 19, 30), c)},
			want: []Kind{KindOverlap},
			runs: [][]int{{0, 1}},
		},
		{
			name: "long section covering two later ones",
			log: Log{N: 3, Mode: Queue, Records: []Record{ran(0, 5, 10, 100), b, c},
				Resource: writes(ran(0, 5, 10, 100), b, c)},
			want: []Kind{KindOverlap, KindOverlap},
			runs: [][]int{{0, 1}, {0, 2}},
		},
		{
			name: "decreasing fence",
			log: Log{N: 3, Mode: Queue, Records: []Record{a, ran(1, 4, 20, 30), c},
				Resource: writes(a, ran(1, 4, 20, 30), c)},
			want: []Kind{KindFence},
			runs: [][]int{{0, 1}},
		},
		{
			name: "repeated fence",
			log:  Log{N: 3, Mode: Queue, Records: []Record{a, ran(1, 5, 20, 30), c}},
			want: []Kind{KindFence},
			runs: [][]int{{0, 1}},
		},
		{
			name: "overlap and decreasing fence",
			log:  Log{N: 2, Mode: Queue, Records: []Record{a, ran(1, 3, 15, 30)}},
			want: []Kind{KindOverlap, KindFence},
			runs: [][]int{{0, 1}, {0, 1}},
		},
		{
			name: "missing fence",
			log:  Log{N: 1, Mode: Queue, Records: []Record{ran(0, 0, 10, 20)}},
			want: []Kind{KindFence},
			runs: [][]int{{0}},
		},
		{
			name: "unaccounted process",
			log:  Log{N: 4, Mode: Exclusive, Records: []Record{a, b, c}, Resource: writes(a, b, c)},
			want: []Kind{KindUnaccounted},
			runs: [][]int{{3}},
		},
		{
			name: "two records for one run",
			log:  Log{N: 2, Mode: Exclusive, Records: []Record{a, refused(1), refused(1)}},
			want: []Kind{KindUnaccounted},
			runs: [][]int{{1}},
		},
		{
			name: "record for a run that was not launched",
			log:  Log{N: 1, Mode: Exclusive, Records: []Record{a, refused(7)}},
			want: []Kind{KindUnaccounted},
			runs: [][]int{{7}},
		},
		{
			name: "unknown outcome",
			log:  Log{N: 2, Mode: Exclusive, Records: []Record{a, {Run: 1, Outcome: "vanished"}}},
			want: []Kind{KindUnaccounted},
			runs: [][]int{{1}},
		},
		{
			name: "ran without holding",
			log:  Log{N: 2, Mode: Exclusive, Records: []Record{a, {Run: 1, Outcome: Ran}}},
			want: []Kind{KindUnaccounted},
			runs: [][]int{{1}},
		},
		{
			name: "refused yet held",
			log: Log{N: 2, Mode: Exclusive, Records: []Record{a,
				{Run: 1, Outcome: Refused, Held: true, Start: at(30), Finish: at(40), Fence: 6}}},
			want: []Kind{KindUnaccounted},
			runs: [][]int{{1}},
		},
		{
			name: "finish before start",
			log:  Log{N: 2, Mode: Queue, Records: []Record{a, ran(1, 6, 30, 25)}},
			want: []Kind{KindUnaccounted},
			runs: [][]int{{1}},
		},
		{
			name: "failure for another reason than the lock",
			log: Log{N: 3, Mode: Exclusive, Records: []Record{a, refused(1),
				{Run: 2, Outcome: Failed, ExitCode: 69, Reason: "store unavailable"}}},
			want: []Kind{KindFailed},
			runs: [][]int{{2}},
		},
		{
			name: "refused in queue mode",
			log:  Log{N: 3, Mode: Queue, Records: []Record{a, refused(1), refused(2)}},
			want: []Kind{KindRefused},
			runs: [][]int{{1, 2}},
		},
		{
			name: "nobody held the lock",
			log:  Log{N: 2, Mode: Exclusive, Records: []Record{refused(0), refused(1)}},
			want: []Kind{KindNoHolder},
			runs: [][]int{nil},
		},
		{
			name: "resource saw a write inside another section",
			log: Log{N: 2, Mode: Queue, Records: []Record{a, b}, Resource: []fence.Entry{
				{Fence: 5, Data: []byte(startEntry(0))},
				{Fence: 6, Data: []byte(startEntry(1))},
				{Fence: 6, Data: []byte(finishEntry(0))},
			}},
			// Run 0's last write came while run 1 was inside; it also
			// carried the wrong fence.
			want: []Kind{KindResource, KindResource},
			runs: [][]int{{0}, {0}},
		},
		{
			name: "clock stepped back hides an overlap",
			// By the clock run 1 came first, but the resource accepted
			// run 0 first: the clocks disagree with the store's order.
			log: Log{N: 2, Mode: Queue, Records: []Record{ran(0, 5, 40, 50), ran(1, 6, 10, 20)},
				Resource: writes(ran(0, 5, 40, 50), ran(1, 6, 10, 20))},
			want: []Kind{KindFence, KindResource},
			runs: [][]int{{1, 0}, {0, 1}},
		},
		{
			name: "ran but never wrote",
			log:  Log{N: 2, Mode: Queue, Records: []Record{a, b}, Resource: writes(a)},
			want: []Kind{KindResource},
			runs: [][]int{{1}},
		},
		{
			name: "resource write from a run that did not hold",
			log: Log{N: 2, Mode: Exclusive, Records: []Record{a, refused(1)},
				Resource: append(writes(a), fence.Entry{Fence: 7, Data: []byte(startEntry(1))})},
			want: []Kind{KindResource},
			runs: [][]int{{1}},
		},
		{
			name: "foreign resource entry",
			log: Log{N: 1, Mode: Exclusive, Records: []Record{a},
				Resource: append(writes(a), fence.Entry{Fence: 9, Data: []byte("hello")})},
			want: []Kind{KindResource},
			runs: [][]int{nil},
		},
		{
			name: "min hold kept: starts a min hold apart",
			log: Log{N: 3, Mode: Exclusive, MinHold: 2 * time.Second,
				Records:  []Record{ran(0, 5, 10, 20), ran(1, 6, 2010, 2020), refused(2)},
				Resource: writes(ran(0, 5, 10, 20), ran(1, 6, 2010, 2020))},
		},
		{
			name: "min hold kept, less a second of start-up",
			log: Log{N: 2, Mode: Exclusive, MinHold: 2 * time.Second,
				Records:  []Record{ran(0, 5, 10, 20), ran(1, 6, 1010, 1020)},
				Resource: writes(ran(0, 5, 10, 20), ran(1, 6, 1010, 1020))},
		},
		{
			name: "min hold broken: the next run started after the hold",
			log: Log{N: 3, Mode: Exclusive, MinHold: 2 * time.Second,
				Records:  []Record{ran(0, 5, 10, 20), ran(1, 6, 1009, 1020), ran(2, 7, 3100, 3110)},
				Resource: writes(ran(0, 5, 10, 20), ran(1, 6, 1009, 1020), ran(2, 7, 3100, 3110))},
			want: []Kind{KindMinHold},
			runs: [][]int{{0, 1}},
		},
		{
			name: "a run whose last write was refused is closed by the next start",
			log: Log{N: 2, Mode: Queue,
				Records: []Record{
					{Run: 0, Outcome: Failed, Reason: "stale fence", Held: true, Start: at(10), Finish: at(20), Fence: 5},
					b,
				},
				Resource: append([]fence.Entry{{Fence: 5, Data: []byte(startEntry(0))}}, writes(b)...)},
			want: []Kind{KindFailed},
			runs: [][]int{{0}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := Check(tt.log)
			var kinds []Kind
			var runs [][]int
			for _, p := range v.Problems {
				kinds = append(kinds, p.Kind)
				runs = append(runs, p.Runs)
				if p.Message == "" {
					t.Errorf("problem %s has no message", p.Kind)
				}
			}
			if !slices.Equal(kinds, tt.want) {
				t.Fatalf("problems %v, want kinds %v\n%s", kinds, tt.want, problems(v))
			}
			if tt.runs != nil && !slices.EqualFunc(runs, tt.runs, slices.Equal) {
				t.Errorf("problem runs %v, want %v\n%s", runs, tt.runs, problems(v))
			}
			if v.Clean != (len(tt.want) == 0) {
				t.Errorf("Clean = %v with problems %v", v.Clean, kinds)
			}
		})
	}
}

func problems(v Verdict) string {
	var b strings.Builder
	for _, p := range v.Problems {
		b.WriteString("  " + string(p.Kind) + ": " + p.Message + "\n")
	}
	return b.String()
}

func TestCheckCountsOverlaps(t *testing.T) {
	// Runs 1 and 2 each start inside run 0's section: two runs overlap
	// a predecessor, though three sections are involved.
	log := Log{N: 3, Mode: Queue, Records: []Record{ran(0, 5, 10, 100), ran(1, 6, 20, 30), ran(2, 7, 40, 50)}}
	if v := Check(log); v.Overlaps != 2 || v.Clean {
		t.Errorf("Overlaps = %d, Clean = %v; want 2, false", v.Overlaps, v.Clean)
	}
}

func TestCheckListsManyMissingRunsBriefly(t *testing.T) {
	v := Check(Log{N: 1000, Mode: Exclusive, Records: []Record{ran(0, 1, 10, 20)}})
	if len(v.Problems) != 1 {
		t.Fatalf("want one aggregated problem, got %d:\n%s", len(v.Problems), problems(v))
	}
	msg := v.Problems[0].Message
	if !strings.Contains(msg, "999 of 1000 runs") || !strings.Contains(msg, "and 989 more") {
		t.Errorf("message %q does not summarise the missing runs", msg)
	}
	if len(v.Problems[0].Runs) != 999 {
		t.Errorf("problem lists %d runs, want all 999", len(v.Problems[0].Runs))
	}
}

func TestParseEntry(t *testing.T) {
	tests := []struct {
		in   string
		what string
		run  int
		ok   bool
	}{
		{"start run=0", "start", 0, true},
		{"finish run=17", "finish", 17, true},
		{"begin run=1", "", 0, false},
		{"start run=x", "", 0, false},
		{"start", "", 0, false},
		{"", "", 0, false},
	}
	for _, tt := range tests {
		what, run, ok := parseEntry(tt.in)
		if what != tt.what || run != tt.run || ok != tt.ok {
			t.Errorf("parseEntry(%q) = %q, %d, %v; want %q, %d, %v", tt.in, what, run, ok, tt.what, tt.run, tt.ok)
		}
	}
}
