// Package stress is the engine of `dlock stress`: it launches many real
// `dlock run` processes at once against one key, collects what each of them
// did, and decides whether the lock kept its promise.
//
// The pieces are separate so that each can be tested on its own:
//
//   - [Launch] starts N OS processes as close to simultaneously as the
//     machine allows (goroutines released by one gate) and records when each
//     started and exited and with which status. Output goes to one file per
//     process, not to pipes, so 1000 children cost no descriptors once
//     started.
//   - [Work] is the default job, run by the hidden `dlock stress-worker`
//     command under `dlock run`: it notes the wall-clock start, writes
//     through a fenced resource ([fence.Resource]) with DLOCK_FENCE, holds
//     (or runs a user COMMAND), writes again, notes the finish and appends
//     one JSON line ([WorkerRecord]) to a shared results file.
//   - [Run] ties them together and turns processes, worker lines and the
//     resource's log into one [Record] per run.
//   - [Check] is a pure function from records (and the resource's log) to a
//     [Verdict]: no two critical sections overlap, accepted fences strictly
//     increase, every process is accounted for, none failed for a reason
//     other than the lock.
//   - [Summarize] computes the figures shown to people; [WriteTimeline]
//     draws the runs on a time axis as a self-contained SVG.
//
// All runs execute on one host, so their wall clocks are the same clock; the
// overlap check relies on that. Because a wall clock can be stepped (NTP),
// the verdict is cross-checked against the order in which the fenced
// resource accepted the runs' writes, which no clock influences.
package stress

import (
	"encoding/json"
	"fmt"
	"time"
)

// Mode says what runs do when they find the lock held.
type Mode string

// The modes of a stress run.
const (
	// Exclusive runs are refused at once when the lock is held (the seed's
	// "already running"); `dlock run` exits 75 for them.
	Exclusive Mode = "exclusive"
	// Queue runs wait for the lock, so all N eventually run, one at a time.
	Queue Mode = "queue"
)

// ParseMode returns the mode named s.
func ParseMode(s string) (Mode, error) {
	switch m := Mode(s); m {
	case Exclusive, Queue:
		return m, nil
	}
	return "", fmt.Errorf("stress: unknown mode %q (want exclusive or queue)", s)
}

// Outcome is what became of one launched process.
type Outcome string

// The outcomes a run can have.
const (
	// Ran: the process took the lock, its job finished cleanly and dlock
	// exited 0.
	Ran Outcome = "ran"
	// Refused: dlock found the lock held and exited with the conflict
	// status without running the job.
	Refused Outcome = "refused"
	// Failed: anything else (dlock error, lost lock, job error, a stale
	// fence, the process could not start). Reason says what.
	Failed Outcome = "failed"
)

// Record is the log of one run: what the launcher saw of the `dlock run`
// process and, if it held the lock, what its job reported. It is one line of
// the --report file.
type Record struct {
	Run     int     `json:"run"`              // run id, 0..N-1
	PID     int     `json:"pid,omitempty"`    // pid of the dlock process
	Outcome Outcome `json:"outcome"`          // ran, refused or failed
	Reason  string  `json:"reason,omitempty"` // why it was refused or failed

	Launched time.Time `json:"launched"`         // the process was started
	Exited   time.Time `json:"exited"`           // the launcher saw it exit
	ExitCode int       `json:"exit_code"`        // dlock's status, 128+N if killed by signal N, -1 if it never started
	Output   string    `json:"output,omitempty"` // the tail of its stdout and stderr

	// Held is true when the job ran under the lock; Start, Finish, Fence
	// and LockID are then the job's own report.
	Held   bool      `json:"held"`
	Start  time.Time `json:"start,omitzero"`    // wall clock as the critical section began
	Finish time.Time `json:"finish,omitzero"`   // wall clock as it ended
	Fence  uint64    `json:"fence,omitempty"`   // the grant's fence (DLOCK_FENCE)
	LockID string    `json:"lock_id,omitempty"` // the grant's public id
}

// Wait is how long the run took from launch to the start of its critical
// section: process start-up plus time spent waiting for the lock. It is 0
// for runs that did not hold the lock.
func (r Record) Wait() time.Duration {
	if !r.Held || r.Launched.IsZero() {
		return 0
	}
	return r.Start.Sub(r.Launched)
}

// MarshalJSON adds the derived wait_ms to the record's fields.
func (r Record) MarshalJSON() ([]byte, error) {
	type plain Record // without methods, so this does not recurse
	return json.Marshal(struct {
		plain
		WaitMS float64 `json:"wait_ms,omitempty"`
		HoldMS float64 `json:"hold_ms,omitempty"`
	}{plain(r), ms(r.Wait()), ms(r.hold())})
}

func (r Record) hold() time.Duration {
	if !r.Held {
		return 0
	}
	return r.Finish.Sub(r.Start)
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// WorkerRecord is the line the default job appends to the results file
// when it ends, whether it succeeded or not.
type WorkerRecord struct {
	Run    int       `json:"run"`
	PID    int       `json:"pid"`
	Key    string    `json:"key"`
	LockID string    `json:"lock_id"`
	Fence  uint64    `json:"fence"`
	Start  time.Time `json:"start"`
	Finish time.Time `json:"finish"`
	Error  string    `json:"error,omitempty"` // why the job failed, if it did
}
