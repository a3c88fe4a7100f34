# sandvm: the entry points a new user, a developer and CI use.
# `make run` boots a sandbox; `make test` runs every test. Both set up the host first.

SHELL := /bin/bash
CARGO ?= cargo
CONFIG ?= configs/qemu-x86_64.toml
SANDVM := target/release/sandvm
GUEST := build/guest/vmlinuz build/guest/initramfs.cpio.gz build/guest/rootfs.ext4
# End-to-end tests boot real VMs under TCG; two at a time keeps a 2-core host reliable.
E2E_THREADS ?= 2
# Seconds `make fuzz` runs each fuzz target.
FUZZ_SECONDS ?= 60

.PHONY: all setup setup-base setup-fuzz build build-sandvm guest guest-initrd oci-image run test unit e2e lint bench fuzz fuzz-build clean

all: build

## setup: install every system dependency (idempotent; root or sudo): what test and bench need
setup:
	@bash scripts/setup.sh all

## setup-base: only what `make run` needs (apt packages, QEMU 10 for x86_64, virtiofsd)
setup-base:
	@bash scripts/setup.sh base

## setup-fuzz: only what `make fuzz-build` needs (the apt packages that build the crates, cargo-fuzz)
setup-fuzz:
	@bash scripts/setup.sh fuzz

## build: the workspace in release mode (the sandvm binary and the tests)
build:
	$(CARGO) build --release --workspace --all-targets

## guest: the test kernel, initramfs and ext4 root image, from Debian packages; the 9p guest (NINEP_GUEST=0 skips it); the no-initrd kernel (built once per machine)
guest:
	@bash scripts/build-guest.sh

## guest-initrd: the guest without the no-initrd kernel (what `make run` needs: its config boots the initramfs), with the 9p guest
guest-initrd:
	@NOINITRD_KERNEL=0 bash scripts/build-guest.sh

## build-sandvm: only the sandvm binary, in release mode (what `make run` needs)
build-sandvm:
	@echo "make: building the sandvm binary (release; about 3-5 minutes the first time on 2 cores, seconds after)"
	$(CARGO) build --release -p sandvm --bin sandvm

## oci-image: the container test image (busybox-static in an OCI layout archive, build/oci/)
oci-image:
	@bash scripts/build-oci-image.sh

## run: set up what it needs, build sandvm and the guest, then boot a sandbox and print its timeline
run: setup-base build-sandvm guest-initrd
	$(SANDVM) run --config $(CONFIG)

## test: set up, build, and run every test: unit, real-QEMU and end-to-end; build the fuzz targets
test: setup guest oci-image lint fuzz-build
	$(CARGO) build --release --workspace --all-targets
	$(CARGO) test --release --workspace -- --test-threads=$(E2E_THREADS)

## lint: formatting and clippy, as CI checks them
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --no-deps -p sandvm-runtime

## bench: side-by-side benchmarks; results land in target/bench/ and docs/performance.md
bench: setup build guest oci-image
	@bash bench/run.sh

## fuzz-build: build every cargo-fuzz target (fuzz/target), as CI does through `make test`
fuzz-build: setup-fuzz
	@bash scripts/fuzz.sh build

## fuzz: seed the corpora, then run each cargo-fuzz target for FUZZ_SECONDS (default 60) each
fuzz: setup-fuzz
	@FUZZ_SECONDS=$(FUZZ_SECONDS) bash scripts/fuzz.sh

clean:
	$(CARGO) clean
	rm -rf fuzz/target
	rm -rf build
