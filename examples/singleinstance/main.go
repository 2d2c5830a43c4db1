// Command singleinstance shows a job that must never run twice at once,
// guarded by dlock's file backend, the way seed 000 guarded a PHP script with
// Redis and launched it 1000 times from Node.js.
//
// Run one job:
//
//	go run ./examples/singleinstance
//
// Launch many copies at once (real OS processes) and tally what happened:
//
//	go run ./examples/singleinstance -launch 100
//
// Each job prints when it starts and finishes with its run id and fence;
// copies that find the lock held say so and exit 75. When all copies start
// within the hold time, exactly one runs.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"time"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/filelock"
)

// exitLocked is the exit status of a copy that found the job running, as
// `dlock run` uses it (EX_TEMPFAIL).
const exitLocked = 75

func main() {
	launch := flag.Int("launch", 0, "start this many copies of the job at once and tally their outcomes")
	hold := flag.Duration("hold", time.Second, "how long the job works while holding the lock")
	dir := flag.String("dir", "", "lock directory (default: dlock's per-user directory)")
	flag.Parse()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if *launch > 0 {
		os.Exit(launchMany(ctx, *launch, os.Args[1:]))
	}
	os.Exit(job(ctx, *dir, *hold))
}

// job is one run of the guarded work.
func job(ctx context.Context, dir string, hold time.Duration) int {
	runID := fmt.Sprintf("%d-%d", os.Getpid(), time.Now().UnixNano()%1e6)
	if dir == "" {
		var err error
		if dir, err = filelock.DefaultDir(); err != nil {
			fmt.Fprintln(os.Stderr, "singleinstance:", err)
			return 69
		}
	}
	backend, err := filelock.New(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "singleinstance:", err)
		return 69
	}
	client := dlock.New(backend, dlock.WithLabel("singleinstance run "+runID))
	// Before exiting, let an acquire that failed after reaching the store
	// be given back, rather than left to its TTL.
	defer client.Drain(context.WithoutCancel(ctx))

	lock, err := client.TryAcquire(ctx, "examples/singleinstance", dlock.WithTTL(10*time.Second))
	if errors.Is(err, dlock.ErrNotAcquired) {
		fmt.Printf("run %s: already running, skipped (%v)\n", runID, err)
		return exitLocked
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "singleinstance:", err)
		return 69
	}
	defer lock.Release(context.WithoutCancel(ctx))

	fmt.Printf("run %s: start (fence %d)\n", runID, lock.Fence())
	select {
	case <-time.After(hold): // the work
	case <-lock.Done():
		fmt.Printf("run %s: lock lost: %v\n", runID, lock.Err())
		return 79
	case <-ctx.Done():
	}
	fmt.Printf("run %s: finish\n", runID)
	return 0
}

// launchMany starts n copies of this program (without -launch) at once and
// reports how many ran and how many were refused.
func launchMany(ctx context.Context, n int, args []string) int {
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, "singleinstance:", err)
		return 70
	}
	childArgs := withoutLaunch(args)
	var (
		mu             sync.Mutex
		ran, skipped   int
		failed         []string
		wg             sync.WaitGroup
		start          = time.Now()
		startGate      = make(chan struct{})
		linesToPrint   = make(chan string, n)
		printerStopped = make(chan struct{})
	)
	go func() {
		defer close(printerStopped)
		for line := range linesToPrint {
			fmt.Println(line)
		}
	}()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-startGate // release all copies together
			cmd := exec.CommandContext(ctx, self, childArgs...)
			out, err := cmd.StdoutPipe()
			if err != nil {
				mu.Lock()
				failed = append(failed, err.Error())
				mu.Unlock()
				return
			}
			cmd.Stderr = os.Stderr
			if err := cmd.Start(); err != nil {
				mu.Lock()
				failed = append(failed, err.Error())
				mu.Unlock()
				return
			}
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				linesToPrint <- sc.Text()
			}
			err = cmd.Wait()
			mu.Lock()
			defer mu.Unlock()
			var exitErr *exec.ExitError
			switch {
			case err == nil:
				ran++
			case errors.As(err, &exitErr) && exitErr.ExitCode() == exitLocked:
				skipped++
			default:
				failed = append(failed, err.Error())
			}
		}()
	}
	close(startGate)
	wg.Wait()
	close(linesToPrint)
	<-printerStopped
	fmt.Printf("launched %d copies in %v: %d ran, %d skipped as already running, %d failed\n",
		n, time.Since(start).Round(time.Millisecond), ran, skipped, len(failed))
	if len(failed) > 0 {
		fmt.Println("failures:", strings.Join(failed, "; "))
		return 1
	}
	return 0
}

func withoutLaunch(args []string) []string {
	var out []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "-launch" || a == "--launch":
			i++ // skip its value
		case strings.HasPrefix(a, "-launch=") || strings.HasPrefix(a, "--launch="):
		default:
			out = append(out, a)
		}
	}
	return out
}
