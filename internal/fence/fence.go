// Package fence is a tiny fenced resource: an append-only log in a file
// that accepts a write only if its fencing number is at least the highest
// it has accepted. It shows what a resource must do with dlock's fences to
// stay safe when a lease is lost (a holder paused past its TTL writes with
// an old fence and is refused), and it is what the cross-process tests and
// `dlock stress` write through.
//
// The file starts with a fixed-width header holding the highest fence seen,
// followed by one line per accepted write: the fence, a tab and the data
// quoted as a Go string. Writers serialise on an exclusive flock, so any
// number of processes on one host may share the file.
package fence

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
)

// ErrStaleFence reports a write whose fence is lower than one the resource
// has already accepted: the writer's lock was lost and someone else has
// held it since.
var ErrStaleFence = errors.New("fence: stale fence")

// StaleFenceError is the error of a refused write. It matches
// [ErrStaleFence].
type StaleFenceError struct {
	Fence   uint64 // the refused writer's fence
	Highest uint64 // the highest fence accepted so far
}

func (e *StaleFenceError) Error() string {
	return fmt.Sprintf("fence: stale fence %d, already accepted %d", e.Fence, e.Highest)
}

// Unwrap makes the error match [ErrStaleFence].
func (e *StaleFenceError) Unwrap() error { return ErrStaleFence }

// headerLen is the size of the header: 20 digits (the most a uint64 has)
// and a newline. A fixed width lets the header be rewritten in place.
const headerLen = 21

// Resource is a fenced log in one file. It holds no open file between
// calls and is safe for concurrent use.
type Resource struct {
	path string
}

// Entry is one accepted write.
type Entry struct {
	Fence uint64
	Data  []byte
}

// Open returns the resource in file path, creating it (0600) if missing.
func Open(path string) (*Resource, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("fence: %w", err)
	}
	return &Resource{path: path}, f.Close()
}

// Path returns the file the resource lives in.
func (r *Resource) Path() string { return r.path }

// Write appends data if fence is at least the highest fence accepted so far
// (equal fences are the same holder writing again), and records fence as
// the new highest. A lower fence is refused with a [*StaleFenceError]. Other
// errors are file-system errors or ctx's error while waiting for the file.
func (r *Resource) Write(ctx context.Context, fence uint64, data []byte) error {
	f, err := r.lock(ctx, lockEx)
	if err != nil {
		return err
	}
	defer f.Close()
	highest, err := readHeader(f)
	if err != nil {
		return err
	}
	if fence < highest {
		return &StaleFenceError{Fence: fence, Highest: highest}
	}
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("fence: %w", err)
	}
	end := max(st.Size(), headerLen)
	line := strconv.AppendUint(nil, fence, 10)
	line = append(line, '\t')
	line = strconv.AppendQuote(line, string(data))
	line = append(line, '\n')
	// The entry first, then the header: a crash in between leaves an
	// entry the header does not cover yet, never a header that claims
	// more than the log holds.
	if _, err := f.WriteAt(line, end); err != nil {
		return fmt.Errorf("fence: %w", err)
	}
	if fence > highest || st.Size() < headerLen {
		if _, err := f.WriteAt(fmt.Appendf(nil, "%020d\n", fence), 0); err != nil {
			return fmt.Errorf("fence: %w", err)
		}
	}
	return nil
}

// Highest returns the highest fence accepted so far, 0 if none.
func (r *Resource) Highest(ctx context.Context) (uint64, error) {
	f, err := r.lock(ctx, lockSh)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	return readHeader(f)
}

// Entries returns the accepted writes in order.
func (r *Resource) Entries(ctx context.Context) ([]Entry, error) {
	f, err := r.lock(ctx, lockSh)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.Seek(headerLen, io.SeekStart); err != nil {
		return nil, fmt.Errorf("fence: %w", err)
	}
	var out []Entry
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		num, quoted, ok := strings.Cut(sc.Text(), "\t")
		fence, err := strconv.ParseUint(num, 10, 64)
		if !ok || err != nil {
			return nil, fmt.Errorf("fence: %s: bad entry %q", r.path, sc.Text())
		}
		data, err := strconv.Unquote(quoted)
		if err != nil {
			return nil, fmt.Errorf("fence: %s: bad entry %q", r.path, sc.Text())
		}
		out = append(out, Entry{Fence: fence, Data: []byte(data)})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("fence: %w", err)
	}
	return out, nil
}

// readHeader returns the highest fence; an empty file has 0.
func readHeader(f *os.File) (uint64, error) {
	var buf [headerLen]byte
	n, err := f.ReadAt(buf[:], 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, fmt.Errorf("fence: %w", err)
	}
	if n == 0 {
		return 0, nil
	}
	s := bytes.TrimSpace(buf[:n])
	v, err := strconv.ParseUint(string(s), 10, 64)
	if n < headerLen || err != nil {
		return 0, fmt.Errorf("fence: %s: bad header %q", f.Name(), buf[:n])
	}
	return v, nil
}
