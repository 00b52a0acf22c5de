# The two commands: `make demo` and `make test`. Each installs what is
# missing (Debian packages via apt-get), then builds and runs.

SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
CARGO ?= cargo
LISTEN ?= 127.0.0.1:8080

.PHONY: demo test build bench lint deb

demo:
	scripts/install-deps demo
	$(CARGO) build --release
	./target/release/pollstation demo --listen $(LISTEN)

test:
	scripts/install-deps test
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --all-features -- -D warnings
	mkdir -p target
	$(CARGO) test --all-features 2>&1 | tee target/test.log
	@awk '/^test result:/ {p += $$4; f += $$6} END {printf "total: %d passed, %d failed\n", p, f}' target/test.log

build:
	$(CARGO) build --release

# The Debian package (binary, units, udev rule, example config): target/debian/.
deb:
	scripts/install-deps deb
	$(CARGO) build --release
	scripts/build-deb --binary target/release/pollstation --out target/debian

bench:
	$(CARGO) bench --bench station
	$(CARGO) bench --bench readers
	$(CARGO) bench --bench sse_load
	$(CARGO) bench --bench screen_latency
	$(CARGO) bench --bench xmpp
	$(CARGO) bench --bench identity
	$(CARGO) bench --bench intake
	$(CARGO) bench --bench floor
