package stress

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// outputTail is how much of a process's output a [Proc] keeps.
const outputTail = 2048

// LaunchConfig says which processes [Launch] starts.
type LaunchConfig struct {
	N    int                  // number of processes
	Argv func(i int) []string // command line of process i (argv[0] is a path or a name in $PATH)
	Env  []string             // environment of every process; nil means this process's

	// OutputDir, if set, receives one file per process holding its stdout
	// and stderr; [Proc.Output] is its tail. If empty, output is discarded.
	OutputDir string

	// OnExit, if set, is called (from many goroutines at once) as each
	// process exits or fails to start, e.g. to advance a progress bar.
	OnExit func(Proc)
}

// Proc is what the launcher saw of one process.
type Proc struct {
	Index    int
	PID      int       // 0 if it did not start
	Launched time.Time // when Start returned
	Exited   time.Time // when Wait returned (or Start failed)
	ExitCode int       // exit status, 128+N if killed by signal N, -1 if it did not start
	StartErr error     // why it did not start
	Output   string    // tail of its output, if LaunchConfig.OutputDir was set
}

// Launched is the outcome of [Launch].
type Launched struct {
	Procs []Proc    // indexed by process number
	Began time.Time // when the gate opened
	Ended time.Time // when the last process exited
}

// Spread is the time from the first process start to the last.
func (l *Launched) Spread() time.Duration {
	var first, last time.Time
	for _, p := range l.Procs {
		if p.Launched.IsZero() {
			continue
		}
		if first.IsZero() || p.Launched.Before(first) {
			first = p.Launched
		}
		if p.Launched.After(last) {
			last = p.Launched
		}
	}
	return last.Sub(first)
}

// Wall is the time from the gate opening to the last exit.
func (l *Launched) Wall() time.Duration { return l.Ended.Sub(l.Began) }

// Launch starts cfg.N processes as close to simultaneously as the machine
// allows and waits for all of them. One goroutine per process waits on a
// shared gate; closing it releases them all at once, so the processes are
// forked as fast as the kernel and Go's fork lock let them, while the
// preparation of each (opening its output file) runs in parallel.
//
// Children get no pipes: output goes to a file per process (closed in this
// process right after the start), so descriptors do not grow with N. Go
// already raises this process's RLIMIT_NOFILE soft limit to the hard limit
// at start-up on Unix, for the files open while processes start.
//
// When ctx ends, processes not yet started are not started and running
// ones get SIGTERM (`dlock run` passes it to its job and exits); Launch
// still waits for every started process, so none is left behind. It
// returns ctx's error then, with the processes seen so far.
func Launch(ctx context.Context, cfg LaunchConfig) (*Launched, error) {
	if cfg.N < 1 {
		return nil, fmt.Errorf("stress: launch: N must be at least 1, got %d", cfg.N)
	}
	l := &Launched{Procs: make([]Proc, cfg.N)}
	gate := make(chan struct{})
	var wg sync.WaitGroup
	for i := range cfg.N {
		wg.Go(func() {
			<-gate
			p := launchOne(ctx, cfg, i)
			l.Procs[i] = p
			if cfg.OnExit != nil {
				cfg.OnExit(p)
			}
		})
	}
	l.Began = time.Now()
	close(gate)
	wg.Wait()
	l.Ended = time.Now()
	return l, ctx.Err()
}

func launchOne(ctx context.Context, cfg LaunchConfig, i int) Proc {
	p := Proc{Index: i, ExitCode: -1}
	argv := cfg.Argv(i)
	fail := func(err error) Proc {
		p.StartErr, p.Exited = err, time.Now()
		return p
	}
	if len(argv) == 0 {
		return fail(errors.New("stress: empty command line"))
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Env = cfg.Env
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	var out *os.File
	if cfg.OutputDir != "" {
		var err error
		out, err = os.Create(filepath.Join(cfg.OutputDir, "out-"+strconv.Itoa(i)))
		if err != nil {
			return fail(fmt.Errorf("stress: %w", err))
		}
		cmd.Stdout, cmd.Stderr = out, out
	}
	err := cmd.Start()
	p.Launched = time.Now()
	if out != nil {
		out.Close() // the child has its own copy
	}
	if err != nil {
		p.Launched = time.Time{}
		return fail(fmt.Errorf("stress: start: %w", err))
	}
	p.PID = cmd.Process.Pid
	_ = cmd.Wait() // the status is read from ProcessState below
	p.Exited = time.Now()
	p.ExitCode = exitStatus(cmd.ProcessState)
	if out != nil {
		p.Output = readTail(out.Name(), outputTail)
	}
	return p
}

// exitStatus is a process's status as a shell reports it: the exit code,
// or 128+N if signal N killed it.
func exitStatus(ps *os.ProcessState) int {
	if ws, ok := ps.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		return 128 + int(ws.Signal())
	}
	return ps.ExitCode()
}

// readTail returns up to the last n bytes of a file, "" if it cannot be
// read.
func readTail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ""
	}
	off := max(st.Size()-n, 0)
	b, err := io.ReadAll(io.NewSectionReader(f, off, n))
	if err != nil {
		return ""
	}
	return string(b)
}
