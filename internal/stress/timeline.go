package stress

import (
	"bufio"
	"fmt"
	"html"
	"io"
	"math"
	"slices"
	"time"
)

// TimelineOptions shape the drawing made by [WriteTimeline].
type TimelineOptions struct {
	Title string // first line of the heading
	HTML  bool   // wrap the SVG in a minimal HTML page
}

// Geometry of the drawing, in SVG user units (pixels).
const (
	tlLeft     = 150.0 // room for row labels
	tlPlot     = 1000.0
	tlRight    = 30.0
	tlTop      = 70.0 // heading and legend
	tlBottom   = 40.0 // time axis
	tlMaxRows  = 1000.0
	tlMaxRowPx = 14.0
)

// WriteTimeline draws the runs on one time axis as a self-contained SVG
// (no scripts, no external resources): a row of ticks for the launches,
// then one row per run that held the lock, in start order, with a bar from
// the start to the finish of its critical section and a thin line from its
// launch to that start (its wait). Bars of runs in an overlap are red, the
// others green, so a clean run is a staircase in which no two bars share a
// vertical slice. Hovering a bar shows its run, fence and times.
func WriteTimeline(w io.Writer, records []Record, v Verdict, opt TimelineOptions) error {
	bw := bufio.NewWriter(w)
	var held []Record
	var t0, t1 time.Time
	widen := func(t time.Time) {
		if t.IsZero() {
			return
		}
		if t0.IsZero() || t.Before(t0) {
			t0 = t
		}
		if t.After(t1) {
			t1 = t
		}
	}
	for _, r := range records {
		widen(r.Launched)
		widen(r.Exited)
		if r.Held {
			held = append(held, r)
			widen(r.Start)
			widen(r.Finish)
		}
	}
	slices.SortFunc(held, func(a, b Record) int { return a.Start.Compare(b.Start) })
	span := t1.Sub(t0)
	if span <= 0 {
		span = time.Millisecond
	}
	bad := map[int]bool{}
	for _, p := range v.Problems {
		if p.Kind == KindOverlap || p.Kind == KindFence || p.Kind == KindResource {
			for _, r := range p.Runs {
				bad[r] = true
			}
		}
	}

	rows := float64(len(held))
	rowH := tlMaxRowPx
	if rows*rowH > tlMaxRows {
		rowH = max(tlMaxRows/rows, 1)
	}
	launchRow := 18.0
	plotH := launchRow + 6 + rows*rowH
	width := tlLeft + tlPlot + tlRight
	height := tlTop + plotH + tlBottom
	x := func(t time.Time) float64 { return tlLeft + tlPlot*float64(t.Sub(t0))/float64(span) }

	if opt.HTML {
		fmt.Fprintf(bw, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>%s</title></head>\n<body style=\"margin:0\">\n",
			html.EscapeString(opt.Title))
	} else {
		bw.WriteString("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n")
	}
	fmt.Fprintf(bw, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="11">`+"\n",
		width, height, width, height)
	bw.WriteString(`<rect width="100%" height="100%" fill="white"/>` + "\n")

	// Heading and legend.
	verdict := "verdict: clean, no overlaps"
	color := "#2e7d32"
	if !v.Clean {
		verdict = fmt.Sprintf("verdict: FAILED, %d problem(s), %d overlap(s)", len(v.Problems), v.Overlaps)
		color = "#c62828"
	}
	fmt.Fprintf(bw, `<text x="10" y="20" font-size="15" font-weight="bold">%s</text>`+"\n", esc(opt.Title))
	fmt.Fprintf(bw, `<text x="10" y="40" font-size="13" fill="%s">%s; %d of %d runs held the lock</text>`+"\n",
		color, esc(verdict), len(held), len(records))
	fmt.Fprintf(bw, `<g font-size="11"><rect x="10" y="50" width="14" height="9" fill="#2e7d32"/><text x="28" y="58">critical section (start to finish)</text>`+
		`<rect x="230" y="50" width="14" height="9" fill="#c62828"/><text x="248" y="58">overlapping or out of fence order</text>`+
		`<line x1="450" y1="54.5" x2="470" y2="54.5" stroke="#9e9e9e"/><text x="474" y="58">launch to start (wait)</text>`+
		`<line x1="620" y1="50" x2="620" y2="59" stroke="#616161"/><text x="626" y="58">process launched</text></g>`+"\n")

	// Time grid and axis.
	axisY := tlTop + plotH
	step := niceStep(span / 10)
	bw.WriteString(`<g stroke="#e0e0e0">` + "\n")
	for d := time.Duration(0); d <= span; d += step {
		px := tlLeft + tlPlot*float64(d)/float64(span)
		fmt.Fprintf(bw, `<line x1="%.2f" y1="%.2f" x2="%.2f" y2="%.2f"/>`+"\n", px, tlTop, px, axisY)
	}
	bw.WriteString("</g>\n")
	fmt.Fprintf(bw, `<line x1="%.2f" y1="%.2f" x2="%.2f" y2="%.2f" stroke="black"/>`+"\n", tlLeft, axisY, tlLeft+tlPlot, axisY)
	bw.WriteString(`<g text-anchor="middle">` + "\n")
	for d := time.Duration(0); d <= span; d += step {
		px := tlLeft + tlPlot*float64(d)/float64(span)
		fmt.Fprintf(bw, `<line x1="%.2f" y1="%.2f" x2="%.2f" y2="%.2f" stroke="black"/><text x="%.2f" y="%.2f">%s</text>`+"\n",
			px, axisY, px, axisY+5, px, axisY+17, d)
	}
	bw.WriteString("</g>\n")
	fmt.Fprintf(bw, `<text x="%.2f" y="%.2f" text-anchor="middle" fill="#616161">time since the first launch (%s, wall clock of this host)</text>`+"\n",
		tlLeft+tlPlot/2, axisY+33, t0.Format("2006-01-02 15:04:05.000"))

	// Launches.
	fmt.Fprintf(bw, `<text x="%.2f" y="%.2f" text-anchor="end">launches (%d)</text>`+"\n", tlLeft-6, tlTop+13, len(records))
	bw.WriteString(`<g stroke="#616161" stroke-opacity="0.5">` + "\n")
	for _, r := range records {
		if r.Launched.IsZero() {
			continue
		}
		px := x(r.Launched)
		fmt.Fprintf(bw, `<line x1="%.2f" y1="%.2f" x2="%.2f" y2="%.2f"/>`+"\n", px, tlTop+2, px, tlTop+launchRow-2)
	}
	bw.WriteString("</g>\n")

	// Holders.
	labels := rowH >= 10
	for i, r := range held {
		y := tlTop + launchRow + 6 + float64(i)*rowH
		fill := "#2e7d32"
		if bad[r.Run] {
			fill = "#c62828"
		}
		if !r.Launched.IsZero() && r.Launched.Before(r.Start) {
			mid := y + rowH/2
			fmt.Fprintf(bw, `<line x1="%.2f" y1="%.2f" x2="%.2f" y2="%.2f" stroke="#9e9e9e" stroke-width="%.2f"/>`+"\n",
				x(r.Launched), mid, x(r.Start), mid, max(rowH/8, 0.5))
		}
		barH := max(rowH-2, rowH*0.8)
		fmt.Fprintf(bw, `<rect class="bar" x="%.2f" y="%.2f" width="%.2f" height="%.2f" fill="%s"><title>run %d, fence %d, %s: %s to %s (%v), waited %v</title></rect>`+"\n",
			x(r.Start), y+(rowH-barH)/2, max(x(r.Finish)-x(r.Start), 1), barH, fill,
			r.Run, r.Fence, r.Outcome, r.Start.Format(timeFormat), r.Finish.Format(timeFormat),
			round(r.Finish.Sub(r.Start)), round(r.Wait()))
		if labels {
			fmt.Fprintf(bw, `<text x="%.2f" y="%.2f" text-anchor="end">run %d, fence %d</text>`+"\n",
				tlLeft-6, y+rowH-3, r.Run, r.Fence)
		}
	}
	if !labels && len(held) > 0 {
		fmt.Fprintf(bw, `<text x="%.2f" y="%.2f" text-anchor="end">%d holders,</text><text x="%.2f" y="%.2f" text-anchor="end">in start order</text>`+"\n",
			tlLeft-6, tlTop+launchRow+20, len(held), tlLeft-6, tlTop+launchRow+34)
	}
	bw.WriteString("</svg>\n")
	if opt.HTML {
		bw.WriteString("</body></html>\n")
	}
	return bw.Flush()
}

// niceStep rounds d up to 1, 2 or 5 times a power of ten nanoseconds.
func niceStep(d time.Duration) time.Duration {
	if d <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(float64(d))))
	for _, m := range []float64{1, 2, 5, 10} {
		if s := time.Duration(m * p); s >= d {
			return s
		}
	}
	return time.Duration(10 * p)
}

// esc escapes text for SVG content: html.EscapeString's entities (&amp;
// &lt; &gt; &#39; &#34;) are all valid XML.
func esc(s string) string { return html.EscapeString(s) }
