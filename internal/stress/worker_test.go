package stress

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/dlock-dev/dlock/internal/fence"
)

// workerEnv is the environment `dlock run` would give the job.
func workerEnv(fenceNum uint64) func(string) string {
	env := map[string]string{EnvFence: strconv.FormatUint(fenceNum, 10), EnvLockID: "lid", EnvKey: "k"}
	return func(name string) string { return env[name] }
}

func newWorkerConfig(t *testing.T, run int, fenceNum uint64) WorkerConfig {
	t.Helper()
	dir := t.TempDir()
	return WorkerConfig{
		Run: run, Hold: time.Millisecond, Getenv: workerEnv(fenceNum),
		Resource: filepath.Join(dir, "resource"), Results: filepath.Join(dir, "results.jsonl"),
	}
}

func readWorkerLines(t *testing.T, path string) []WorkerRecord {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []WorkerRecord
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var w WorkerRecord
		if err := json.Unmarshal(sc.Bytes(), &w); err != nil {
			t.Fatalf("results line %q: %v", sc.Text(), err)
		}
		out = append(out, w)
	}
	return out
}

func TestWorkWritesThroughTheFence(t *testing.T) {
	cfg := newWorkerConfig(t, 3, 7)
	cfg.Hold = 20 * time.Millisecond
	status, err := Work(t.Context(), cfg)
	if status != 0 || err != nil {
		t.Fatalf("Work = %d, %v", status, err)
	}
	lines := readWorkerLines(t, cfg.Results)
	if len(lines) != 1 {
		t.Fatalf("%d results lines, want 1", len(lines))
	}
	w := lines[0]
	if w.Run != 3 || w.Fence != 7 || w.LockID != "lid" || w.Key != "k" || w.Error != "" || w.PID != os.Getpid() {
		t.Errorf("results line %+v", w)
	}
	if held := w.Finish.Sub(w.Start); held < cfg.Hold {
		t.Errorf("section lasted %v, shorter than the hold %v", held, cfg.Hold)
	}
	res, err := fence.Open(cfg.Resource)
	if err != nil {
		t.Fatal(err)
	}
	entries, err := res.Entries(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"start run=3", "finish run=3"}
	if len(entries) != len(want) {
		t.Fatalf("resource has %d entries, want %d", len(entries), len(want))
	}
	for i, e := range entries {
		if string(e.Data) != want[i] || e.Fence != 7 {
			t.Errorf("entry %d = %d %q, want 7 %q", i, e.Fence, e.Data, want[i])
		}
	}
}

func TestWorkRefusedByAHigherFence(t *testing.T) {
	cfg := newWorkerConfig(t, 1, 4)
	res, err := fence.Open(cfg.Resource)
	if err != nil {
		t.Fatal(err)
	}
	if err := res.Write(t.Context(), 9, []byte("a later holder")); err != nil {
		t.Fatal(err)
	}
	status, err := Work(t.Context(), cfg)
	if status == 0 || !errors.Is(err, fence.ErrStaleFence) {
		t.Fatalf("Work = %d, %v; want a failure matching ErrStaleFence", status, err)
	}
	lines := readWorkerLines(t, cfg.Results)
	if len(lines) != 1 || lines[0].Error == "" {
		t.Fatalf("results %+v: want one line with the error", lines)
	}
}

func TestWorkNotUnderLock(t *testing.T) {
	cfg := newWorkerConfig(t, 0, 0)
	cfg.Getenv = func(string) string { return "" }
	if status, err := Work(t.Context(), cfg); status == 0 || !errors.Is(err, ErrNotUnderLock) {
		t.Fatalf("Work = %d, %v; want ErrNotUnderLock", status, err)
	}
}

func TestWorkCancelledBeforeStart(t *testing.T) {
	cfg := newWorkerConfig(t, 2, 3)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if status, err := Work(ctx, cfg); status == 0 || !errors.Is(err, context.Canceled) {
		t.Fatalf("Work = %d, %v; want a failure matching context.Canceled", status, err)
	}
	if lines := readWorkerLines(t, cfg.Results); len(lines) != 1 || lines[0].Error == "" {
		t.Fatalf("results %+v: want one line with the error", lines)
	}
}

// TestWorkCutShort stops a job in the middle of its COMMAND, as `dlock run`
// does when the lock is lost: COMMAND gets SIGTERM, and the last write is
// still attempted.
func TestWorkCutShort(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip(err)
	}
	cfg := newWorkerConfig(t, 2, 3)
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg.Command = []string{sh, "-c", `echo inside > "$1"; exec sleep 60`, "sh", fifo}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	go func() {
		// Opening the FIFO waits for COMMAND to open it for writing.
		f, err := os.Open(fifo)
		if err == nil {
			_, _ = io.ReadAll(f)
			f.Close()
		}
		cancel()
	}()
	status, err := Work(ctx, cfg)
	if status != 128+int(syscall.SIGTERM) || err == nil {
		t.Fatalf("Work = %d, %v; want 143 (COMMAND killed by SIGTERM) and an error", status, err)
	}
	res, _ := fence.Open(cfg.Resource)
	entries, err := res.Entries(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 2 || string(entries[1].Data) != "finish run=2" {
		t.Fatalf("resource entries %+v: want the start and the finish", entries)
	}
}

func TestWorkRunsCommand(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip(err)
	}
	cfg := newWorkerConfig(t, 5, 2)
	out := filepath.Join(t.TempDir(), "out")
	cfg.Command = []string{sh, "-c", `echo "$DLOCK_STRESS_RUN" > "$1"; exit 3`, "sh", out}
	status, err := Work(t.Context(), cfg)
	if status != 3 || err == nil {
		t.Fatalf("Work = %d, %v; want COMMAND's status 3 and an error", status, err)
	}
	got, rerr := os.ReadFile(out)
	if rerr != nil || string(got) != "5\n" {
		t.Errorf("COMMAND saw DLOCK_STRESS_RUN %q (%v), want 5", got, rerr)
	}
}
