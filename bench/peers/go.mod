module github.com/dlock-dev/dlock/bench/peers

go 1.26.0

replace github.com/dlock-dev/dlock => ../..

require (
	github.com/bsm/redislock v0.9.4
	github.com/dlock-dev/dlock v0.0.0
	github.com/go-redsync/redsync/v4 v4.18.1
	github.com/gofrs/flock v0.13.2
	github.com/redis/go-redis/v9 v9.23.0
)

require (
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	go.uber.org/atomic v1.12.0 // indirect
	golang.org/x/sys v0.50.0 // indirect
)
