// Package bench measures lock implementations with the scenarios of
// `dlock bench`: serial and parallel acquire+release pairs, and contention
// for one key. The same code serves the dlock command, the package's Go
// benchmarks (go test -bench, for benchstat across commits) and the module
// in bench/peers that compares dlock with other libraries, so that every
// figure comes from one implementation.
//
// A [Subject] is an implementation under test: it builds one [Locker] per
// worker and may name [Counter]s of store operations. [Dlock] makes a
// Subject of any dlock backend and counts its calls with [Count];
// [RedisCommands] and [RedisCPU] count what a Redis server processed and
// the CPU it took, for subjects that are not dlock too. [Run] runs a
// [Scenario] and returns a [Result]; [FileFloor] and [RedisFloor] measure
// what the store costs without a lock library; [WriteText] prints a
// [Report].
//
// Mutual exclusion is checked within the process: each contended worker
// increments a shared counter on entering its critical section and
// decrements it on leaving, and a grant that finds it non-zero is a
// violation. Fences, where the subject has them, must grow with every
// grant.
package bench
