# `make test` is the README's test command (and CI's): it installs what the
# tests need and runs them all. `make demo` runs the library example on the
# embedded file backend; `make bench` the file backend's benchmarks.
GO ?= go

.PHONY: test deps check demo bench fuzz

test: deps check
	$(GO) test -race -count=1 ./...

# deps installs the servers integration tests start on loopback ports
# (redis-server, memcached, etcd, PostgreSQL for pglock, from Debian) when
# they are missing.
deps:
	./scripts/install-test-deps

check:
	@unformatted="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
	if [ -n "$$unformatted" ]; then echo "gofmt would change: $$unformatted"; exit 1; fi
	$(GO) vet ./...
	cd bench/peers && $(GO) vet ./... && $(GO) test ./...   # a module of its own: keep it building

demo:
	$(GO) run ./examples/singleinstance -launch 100

bench:
	$(GO) test -run '^$$' -bench . -benchtime 2s ./filelock/

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzValidateKey -fuzztime 30s .
	$(GO) test -run '^$$' -fuzz FuzzRecord -fuzztime 30s ./filelock/
	$(GO) test -run '^$$' -fuzz FuzzBackendURL -fuzztime 30s ./internal/cli/
	$(GO) test -run '^$$' -fuzz FuzzParseDuration -fuzztime 30s ./internal/cli/
