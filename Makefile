# kurir — build, test and demo on Debian 12 with Swift 6.3.
#   make demo   the main job on embedded defaults: broker, fake gateways, kurir, sample requests
#   make test   every test (unit, adapters against the real C libraries, end to end on a real broker)

SHELL := /bin/bash
SWIFT ?= swift
DEB_PACKAGES := libmosquitto-dev libcurl4-openssl-dev libjansson-dev libsqlite3-dev libjemalloc-dev pkg-config \
                mosquitto mosquitto-clients sqlite3 curl ca-certificates openssl
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: deps build release test demo lint format-check clean bench bench-deps chaos fuzz fuzz-build

## deps: install the Debian packages kurir needs, only those missing
deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

## build: debug build of kurir and the fake gateways; fails on any warning in kurir's own code
build: deps
	@set -o pipefail; $(SWIFT) build 2>&1 | tee .build-warnings.log
	@if grep -E "^$(CURDIR)/(Sources|Tests)/.*warning:" .build-warnings.log; then echo "warnings in kurir's code"; exit 1; fi
	@rm -f .build-warnings.log

## release: optimised build of kurir
release: deps
	$(SWIFT) build -c release --product kurir

## test: all test suites, on a real mosquitto broker and the fake gateways over loopback
test: build format-check
	@set -o pipefail; $(SWIFT) build --build-tests 2>&1 | tee .build-warnings.log
	@if grep -E "^$(CURDIR)/(Sources|Tests)/.*warning:" .build-warnings.log; then echo "warnings in kurir's code"; exit 1; fi
	@rm -f .build-warnings.log
	KURIR_BIN_DIR="$$($(SWIFT) build --show-bin-path)" $(SWIFT) test --skip-build

## demo: broker + fake gateways + kurir + sample requests; prints the events and database rows
demo: build
	./scripts/demo.sh "$$($(SWIFT) build --show-bin-path)"

## chaos: fault, crash, bad-input and security suite against the debug kurir (crash points are debug-only);
##        prints the table and fails when a figure misses its bar. CHAOS_ARGS e.g. "--scale 0.1 --only kill".
CHAOS_ARGS ?=
chaos: deps fuzz-build
	$(SWIFT) build --product kurir
	$(SWIFT) build --product kurir-chaos
	"$$($(SWIFT) build --show-bin-path)/kurir-chaos" --bin-dir "$$($(SWIFT) build --show-bin-path)" --work-dir .chaos-run $(CHAOS_ARGS)

## fuzz: libFuzzer over request decoding/validation and gateway reply classification (FUZZ_SECONDS, default 600)
FUZZ_SECONDS ?= 600
FUZZ_FLAGS := -Xswiftc -sanitize=fuzzer,address -Xswiftc -parse-as-library
fuzz-build:
	cd fuzz && $(SWIFT) build $(FUZZ_FLAGS)
fuzz: fuzz-build
	mkdir -p fuzz/corpus fuzz/crashes
	fuzz/.build/debug/kurir-fuzz -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -print_final_stats=1 \
	  -artifact_prefix=fuzz/crashes/ fuzz/corpus fuzz/seeds

## bench: release build, then kurir side by side with the broker ceiling, raw SQLite and mqttwarn
##        (loopback only, under 10 minutes); prints one table and writes it as JSON under bench/results/
bench: deps bench-deps
	$(SWIFT) build -c release --product kurir
	$(SWIFT) build -c release --product kurir-fake-gateway
	$(SWIFT) build -c release --product kurir-bench
	"$$($(SWIFT) build -c release --show-bin-path)/kurir-bench" --out bench/results --work .build-bench/work --venv .build-bench/venv

## bench-deps: python3 and its venv module for the peer (mqttwarn, pip-installed into .build-bench/venv)
bench-deps:
	@if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then \
	  echo "installing: python3 python3-venv"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq python3 python3-venv; \
	fi

## microbench: ordo-one/benchmark over the hot pure functions (decode, validate, classify, encode; under two minutes
##             once built); nested package benchmarks/, so ordinary builds never pay for it
.PHONY: microbench
microbench: deps
	cd benchmarks && $(SWIFT) package --disable-sandbox benchmark

## format-check: the Swift sources follow .swift-format (fix with `swift format format -i -r Sources Tests fuzz/Sources`)
format-check:
	$(SWIFT) format lint --strict -r Sources Tests fuzz/Sources

## lint: shell scripts and YAML
lint: format-check
	shellcheck scripts/*.sh .ci/run
	yamllint -d relaxed docker/compose.yaml

clean:
	rm -rf .build .build-* demo-run .chaos-run fuzz/.build benchmarks/.build
