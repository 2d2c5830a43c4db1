package stress

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"io"
	"strings"
	"testing"
	"time"
)

// svgElements parses doc as XML and returns its elements by name, failing
// the test if it is not well-formed.
func svgElements(t *testing.T, doc []byte) map[string][]xml.StartElement {
	t.Helper()
	out := map[string][]xml.StartElement{}
	d := xml.NewDecoder(bytes.NewReader(doc))
	for {
		tok, err := d.Token()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatalf("timeline is not well-formed XML: %v\n%s", err, doc)
		}
		if se, ok := tok.(xml.StartElement); ok {
			out[se.Name.Local] = append(out[se.Name.Local], se)
		}
	}
}

func attr(se xml.StartElement, name string) string {
	for _, a := range se.Attr {
		if a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

// bars returns the fill colour of the holders' bars in document order.
func bars(t *testing.T, doc []byte) []string {
	t.Helper()
	var fills []string
	for _, r := range svgElements(t, doc)["rect"] {
		if attr(r, "class") == "bar" {
			fills = append(fills, attr(r, "fill"))
		}
	}
	return fills
}

func TestTimelineDrawsOneBarPerHolder(t *testing.T) {
	recs := []Record{ran(0, 5, 10, 20), refused(1), ran(2, 6, 25, 40), refused(3)}
	v := Check(Log{N: 4, Mode: Exclusive, Records: recs})
	var buf bytes.Buffer
	if err := WriteTimeline(&buf, recs, v, TimelineOptions{Title: `stress <"&"> test`}); err != nil {
		t.Fatal(err)
	}
	doc := buf.Bytes()
	els := svgElements(t, doc)
	if len(els["svg"]) != 1 {
		t.Fatalf("want one svg element, got %d", len(els["svg"]))
	}
	if got := bars(t, doc); len(got) != 2 || got[0] != "#2e7d32" || got[1] != "#2e7d32" {
		t.Errorf("bars %v, want two green ones", got)
	}
	if !bytes.Contains(doc, []byte("verdict: clean")) || !bytes.Contains(doc, []byte("stress &lt;&#34;&amp;&#34;&gt; test")) {
		t.Errorf("heading missing or not escaped:\n%s", doc)
	}
	if bytes.Contains(doc, []byte("<script")) {
		t.Error("timeline contains a script")
	}
}

func TestTimelineMarksOverlaps(t *testing.T) {
	recs := []Record{ran(0, 5, 10, 30), ran(1, 6, 20, 40), ran(2, 7, 50, 60)}
	v := Check(Log{N: 3, Mode: Queue, Records: recs})
	var buf bytes.Buffer
	if err := WriteTimeline(&buf, recs, v, TimelineOptions{Title: "overlap"}); err != nil {
		t.Fatal(err)
	}
	got := bars(t, buf.Bytes())
	want := []string{"#c62828", "#c62828", "#2e7d32"}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("bars %v, want %v (the overlapping pair red)", got, want)
	}
	if !bytes.Contains(buf.Bytes(), []byte("FAILED")) {
		t.Error("heading does not say the verdict failed")
	}
}

func TestTimelineHTML(t *testing.T) {
	var buf bytes.Buffer
	recs := []Record{ran(0, 1, 0, 10)}
	if err := WriteTimeline(&buf, recs, Check(Log{N: 1, Mode: Queue, Records: recs}), TimelineOptions{HTML: true}); err != nil {
		t.Fatal(err)
	}
	s := buf.String()
	if !strings.HasPrefix(s, "<!DOCTYPE html>") || !strings.Contains(s, "<svg") || !strings.HasSuffix(s, "</html>\n") {
		t.Errorf("not an HTML page around an SVG:\n%s", s)
	}
}

func TestTimelineWithNoHolders(t *testing.T) {
	var buf bytes.Buffer
	recs := []Record{refused(0)}
	if err := WriteTimeline(&buf, recs, Check(Log{N: 1, Records: recs}), TimelineOptions{}); err != nil {
		t.Fatal(err)
	}
	svgElements(t, buf.Bytes())
}

func TestNiceStep(t *testing.T) {
	tests := []struct{ in, want time.Duration }{
		{0, 1},
		{1, 1},
		{3 * time.Millisecond, 5 * time.Millisecond},
		{110 * time.Millisecond, 200 * time.Millisecond},
		{time.Second, time.Second},
		{7 * time.Second, 10 * time.Second},
	}
	for _, tt := range tests {
		if got := niceStep(tt.in); got != tt.want {
			t.Errorf("niceStep(%v) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestPercentile(t *testing.T) {
	ds := []time.Duration{5, 1, 4, 2, 3, 10, 9, 8, 7, 6}
	for _, tt := range []struct {
		p    int
		want time.Duration
	}{{50, 5}, {99, 10}, {100, 10}, {1, 1}, {0, 1}} {
		if got := percentile(ds, tt.p); got != tt.want {
			t.Errorf("percentile(p%d) = %v, want %v", tt.p, got, tt.want)
		}
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("percentile of nothing = %v", got)
	}
	if ds[0] != 5 {
		t.Error("percentile reordered its input")
	}
}

func TestSummarize(t *testing.T) {
	recs := []Record{ran(0, 5, 10, 20), refused(1), ran(2, 6, 30, 40),
		{Run: 3, Outcome: Failed, ExitCode: 69, Reason: "unavailable"}}
	r := &Result{Records: recs, Verdict: Check(Log{N: 4, Mode: Exclusive, Records: recs})}
	s := Summarize(Config{Mode: Exclusive, Key: "k", Hold: time.Second}, r)
	if s.Launched != 4 || s.Ran != 2 || s.Refused != 1 || s.Failed != 1 || s.Verdict.Clean {
		t.Errorf("summary %+v", s)
	}
	if s.WaitP50 != 10*time.Millisecond || s.WaitP99 != 30*time.Millisecond {
		t.Errorf("waits p50 %v p99 %v, want 10ms and 30ms", s.WaitP50, s.WaitP99)
	}
	var text bytes.Buffer
	if err := s.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "verdict: FAILED") || !strings.Contains(text.String(), "run 3 failed: unavailable") {
		t.Errorf("text summary does not explain the failure:\n%s", text.String())
	}
	s.Interrupted = true
	text.Reset()
	_ = s.WriteText(&text)
	if !strings.Contains(text.String(), "verdict: none, the stress was interrupted") || strings.Contains(text.String(), "FAILED") {
		t.Errorf("interrupted summary claims a verdict:\n%s", text.String())
	}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back["ran"] != 2.0 || back["wait_p50_ms"] != 10.0 || back["hold_ms"] != 1000.0 || back["interrupted"] != true {
		t.Errorf("JSON summary %s", b)
	}
}

func TestReportLines(t *testing.T) {
	recs := []Record{ran(0, 5, 10, 20), refused(1)}
	var buf bytes.Buffer
	if err := WriteReport(&buf, recs); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2:\n%s", len(lines), buf.String())
	}
	var first map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &first); err != nil {
		t.Fatal(err)
	}
	if first["outcome"] != "ran" || first["fence"] != 5.0 || first["wait_ms"] != 10.0 || first["hold_ms"] != 10.0 ||
		first["start"] != "2026-01-02T03:04:05.01Z" {
		t.Errorf("first line %s", lines[0])
	}
	var second Record
	if err := json.Unmarshal([]byte(lines[1]), &second); err != nil {
		t.Fatal(err)
	}
	if second.Outcome != Refused || second.Held || !second.Start.IsZero() {
		t.Errorf("second line %s", lines[1])
	}
}
