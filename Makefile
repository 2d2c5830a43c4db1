# The README's two commands: `make demo` runs the main job on the embedded
# file backend; `make test` installs what the tests need and runs them all.
GO ?= go

.PHONY: test deps check demo bench fuzz

test: deps check
	$(GO) test -race -count=1 ./...

# deps installs the servers integration tests start on loopback ports
# (redis-server, memcached from Debian) when they are missing.
deps:
	./scripts/install-test-deps

check:
	@unformatted="$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))"; \
	if [ -n "$$unformatted" ]; then echo "gofmt would change: $$unformatted"; exit 1; fi
	$(GO) vet ./...

demo:
	$(GO) run ./examples/singleinstance -launch 100

bench:
	$(GO) test -run '^$$' -bench . -benchtime 2s ./filelock/

fuzz:
	$(GO) test -run '^$$' -fuzz FuzzValidateKey -fuzztime 30s .
