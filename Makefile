# vshare — the two set-up commands are `make run` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Debian packages the test suite uses: diod (a 9P2000.L server and clients written elsewhere:
# interop peers and the source of golden bytes); QEMU, a Debian kernel and static busybox for
# the guest that mounts through the Linux 9P client, and gcc + libc6-dev for its static helper
# (tests/vm/); glusterd and libgfapi for the GlusterFS backend; etcd for the fleet store; socat
# for the VM-move test's relays (tests/fleet/test_vm_move.py); libvirtd (run by the test as an
# unprivileged session daemon serving libvirt's test driver) and virsh for the libvirt
# lifecycle-event and polling tests (tests/gateway/test_libvirt_events.py); NFS-Ganesha's 9P
# server, a looser 9P2000.L peer (answers with 9P2000's Rerror) that the FUSE client mounts
# (tests/fuse/test_ganesha.py).
TEST_DEBS := diod qemu-system-x86 linux-image-amd64 busybox-static gcc libc6-dev \
	glusterfs-server libgfapi0 etcd-server socat libvirt-daemon libvirt-clients \
	nfs-ganesha nfs-ganesha-vfs
# What `make bench` compares against: fio, sshfs over a loopback sshd; valgrind counts
# instructions per request (benchmarks/instructions.py), which this VM's drift leaves alone.
BENCH_DEBS := $(TEST_DEBS) fio sshfs openssh-server valgrind
# What the FUSE client mounts with (fusermount3), and what the virtualenv needs to build
# libvirt-python (the gateway's libvirt lifecycle events) against libvirt's headers.
BUILD_DEBS := fuse3 pkg-config gcc libvirt-dev
RUN_DEBS :=

.PHONY: run test test-fast lint typecheck bench venv debs-test debs-bench debs-run clean

$(BIN)/activate: pyproject.toml
	./scripts/ensure-debs.sh $(BUILD_DEBS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(BIN)/activate

venv: $(BIN)/activate

debs-test:
	./scripts/ensure-debs.sh $(TEST_DEBS)

debs-run:
	@[ -z "$(RUN_DEBS)" ] || ./scripts/ensure-debs.sh $(RUN_DEBS)

## run: the all-in-one node on embedded defaults (data under ./var/)
run: venv debs-run
	$(BIN)/vshare up --data ./var

## test: install everything the tests need, then ruff, mypy and pytest
test: venv debs-test lint typecheck
	$(BIN)/pytest

## test-fast: the same checks without the slow tests
test-fast: venv lint typecheck
	$(BIN)/pytest -m 'not slow'

lint: venv
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: venv
	$(BIN)/mypy

debs-bench:
	./scripts/ensure-debs.sh $(BENCH_DEBS)

## bench: codec and gateway microbenchmarks, then vshare side by side with the local disk,
## diod, sshfs and GlusterFS's own client, then the gateway's GlusterFS cache per share
## cache mode (docs/benchmarks.md says how to read them)
## then 9P requests per FUSE operation (and per entry of find | xargs stat), git in a real
## repository on local, vshare, vshare-coherent and sshfs, instructions per
## call in the gateway and the FUSE client (callgrind), and the stock kernel 9P client (TCG guest) on diod,
## then the change feed (latency to a coherent mount's inotify; coherent vs always vs auto)
bench: venv debs-bench
	$(BIN)/python benchmarks/codec.py
	$(BIN)/python benchmarks/gateway.py
	$(BIN)/python benchmarks/compare.py --json docs/side-by-side.json \
		--markdown docs/side-by-side.md --chart docs/side-by-side.png
	$(BIN)/python benchmarks/cache.py --json docs/cache.json --markdown docs/cache-bench.md
	$(BIN)/python benchmarks/requests_per_op.py --json docs/requests.json --markdown docs/requests.md
	$(BIN)/python benchmarks/find_stat.py
	$(BIN)/python benchmarks/git.py --json docs/git-bench.json
	$(BIN)/python benchmarks/instructions.py
	$(BIN)/python benchmarks/kernel_client.py --json docs/kernel-client.json \
		--markdown docs/kernel-client.md
	$(BIN)/python benchmarks/feed.py --markdown docs/feed-bench.md
	$(BIN)/python benchmarks/soak.py --markdown docs/benchmarks.md

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
