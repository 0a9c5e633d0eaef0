# Each target is also written out in the README.
.PHONY: run test lint bench load

run:
	go run ./cmd/converge dev

test:
	go test -race ./...

lint:
	test -z "$$(gofmt -l .)"
	go vet ./...
	staticcheck ./...

bench:
	go test -run '^$$' -bench . -benchtime 2s ./...

load:
	go run ./cmd/converge load
