package dlock_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/dlock-dev/dlock"
	"github.com/dlock-dev/dlock/memlock"
)

func ExampleClient_TryAcquire() {
	ctx := context.Background()
	client := dlock.New(memlock.New())

	lock, err := client.TryAcquire(ctx, "reports/daily")
	if err != nil {
		fmt.Println("not acquired:", err)
		return
	}
	defer lock.Release(ctx) // safe even if the lock is lost or nil

	fmt.Println("holding", lock.Key())
	held, _ := client.IsLocked(ctx, "reports/daily")
	fmt.Println("locked:", held)
	// Output:
	// holding reports/daily
	// locked: true
}

func ExampleClient_TryAcquire_contention() {
	ctx := context.Background()
	backend := memlock.New()
	a := dlock.New(backend, dlock.WithLabel("worker a"))
	b := dlock.New(backend, dlock.WithLabel("worker b"))

	lock, err := a.TryAcquire(ctx, "invoices")
	if err != nil {
		fmt.Println("a:", err)
		return
	}

	_, err = b.TryAcquire(ctx, "invoices")
	fmt.Println("b got it:", err == nil)
	fmt.Println("not acquired:", errors.Is(err, dlock.ErrNotAcquired))
	var nae *dlock.NotAcquiredError
	if errors.As(err, &nae) {
		fmt.Println("held by:", nae.Holder.Owner.Label)
		fmt.Println("same grant:", nae.Holder.LockID == lock.LockID())
	}

	if err := lock.Release(ctx); err != nil {
		fmt.Println("release:", err)
	}
	lock, err = b.TryAcquire(ctx, "invoices")
	fmt.Println("b after release:", err == nil)
	_ = lock.Release(ctx)
	// Output:
	// b got it: false
	// not acquired: true
	// held by: worker a
	// same grant: true
	// b after release: true
}

func ExampleClient_Do() {
	ctx := context.Background()
	client := dlock.New(memlock.New())

	// Do waits for the key, refreshes the lock while fn runs and releases
	// it when fn returns (or panics). fn's context ends if the lock is
	// lost, so fn can stop touching the shared resource.
	err := client.Do(ctx, "migrations", func(ctx context.Context) error {
		held, _ := client.IsLocked(ctx, "migrations")
		fmt.Println("inside Do, locked:", held)
		return nil
	})
	fmt.Println("Do:", err)

	held, _ := client.IsLocked(ctx, "migrations")
	fmt.Println("after Do, locked:", held)

	errMigrate := errors.New("migration failed")
	err = client.Do(ctx, "migrations", func(context.Context) error { return errMigrate })
	fmt.Println("fn's error returned:", errors.Is(err, errMigrate))
	// Output:
	// inside Do, locked: true
	// Do: <nil>
	// after Do, locked: false
	// fn's error returned: true
}

// A fence grows with every grant of a key. A resource that remembers the
// highest fence it has seen can refuse a holder that lost its lease without
// noticing.
func ExampleLock_Fence() {
	ctx := context.Background()
	client := dlock.New(memlock.New())

	var fences []uint64
	for range 3 {
		lock, err := client.TryAcquire(ctx, "ledger")
		if err != nil {
			fmt.Println(err)
			return
		}
		fences = append(fences, lock.Fence())
		_ = lock.Release(ctx)
	}
	fmt.Println(fences[0] < fences[1] && fences[1] < fences[2])

	// A storage layer guarding the ledger rejects stale fences.
	var highest uint64
	write := func(fence uint64) error {
		if fence < highest {
			return fmt.Errorf("fence %d is older than %d", fence, highest)
		}
		highest = fence
		return nil
	}
	fmt.Println(write(fences[2]))
	fmt.Println(write(fences[0]) != nil)
	// Output:
	// true
	// <nil>
	// true
}

func ExampleLock_Done() {
	ctx := context.Background()
	client := dlock.New(memlock.New())

	lock, err := client.TryAcquire(ctx, "cache/rebuild")
	if err != nil {
		fmt.Println(err)
		return
	}
	_ = lock.Release(ctx)

	<-lock.Done() // closed once the lock can no longer be assumed held
	fmt.Println("released:", errors.Is(lock.Err(), dlock.ErrReleased))
	fmt.Println("release again:", errors.Is(lock.Release(ctx), dlock.ErrNotHeld))
	// Output:
	// released: true
	// release again: true
}

// An hourly import that cron starts on every server: the first server to
// start it runs it, and the key stays taken for 50 minutes even though the
// import takes seconds, so a server whose clock runs a little late does not
// run it again.
func ExampleWithMinHold() {
	ctx := context.Background()
	client := dlock.New(memlock.New())
	hourly := func(server string) {
		err := client.Do(ctx, "import/hourly", func(ctx context.Context) error {
			fmt.Println(server, "imports")
			return nil
		}, dlock.WithMaxWait(0), dlock.WithMinHold(50*time.Minute))
		if errors.Is(err, dlock.ErrNotAcquired) {
			fmt.Println(server, "skips: already run this hour")
		}
	}
	hourly("web-1")
	hourly("web-2") // seconds later
	// Output:
	// web-1 imports
	// web-2 skips: already run this hour
}
