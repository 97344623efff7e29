# kurir — build, test and demo on Debian 12 with Swift 6.3.
#   make demo   the main job on embedded defaults: broker, fake gateways, kurir, sample requests
#   make test   every test (unit, adapters against the real C libraries, end to end on a real broker)

SHELL := /bin/bash
SWIFT ?= swift
DEB_PACKAGES := libmosquitto-dev libcurl4-openssl-dev libjansson-dev libsqlite3-dev pkg-config \
                mosquitto mosquitto-clients sqlite3 curl ca-certificates
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: deps build release test demo lint clean

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
test: build
	@set -o pipefail; $(SWIFT) build --build-tests 2>&1 | tee .build-warnings.log
	@if grep -E "^$(CURDIR)/(Sources|Tests)/.*warning:" .build-warnings.log; then echo "warnings in kurir's code"; exit 1; fi
	@rm -f .build-warnings.log
	KURIR_BIN_DIR="$$($(SWIFT) build --show-bin-path)" $(SWIFT) test --skip-build

## demo: broker + fake gateways + kurir + sample requests; prints the events and database rows
demo: build
	./scripts/demo.sh "$$($(SWIFT) build --show-bin-path)"

## lint: shell scripts and YAML
lint:
	shellcheck scripts/*.sh .ci/run
	yamllint -d relaxed docker/compose.yaml

clean:
	rm -rf .build .build-* demo-run
