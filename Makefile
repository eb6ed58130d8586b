# Lockstep: the two set-up commands are `make demo` and `make test`; both
# install what is missing first.

SHELL := /bin/bash
CARGO ?= cargo
# Debian packages the build, the tests and the demo need: the Vulkan loader,
# Mesa's lavapipe (a CPU Vulkan device), the pinned shader toolchain, the
# stock minisign tool that checks the node's signatures in the tests,
# Khronos' validation layer for the validated test run, and a software TPM
# with tpm2-tools, against which lockstep-attest's tests prove MakeCredential;
# the Prometheus server that scrapes `lockstep-fleet metrics` in the fleet's
# metrics test (only its binary is used; the test starts its own); and
# PostgreSQL, on which the fleet inventory's tests also run (the tests start
# and stop their own server; the package's default cluster is not used);
# python3-venv for the ONNX tests' virtual environment (onnx-venv below).
DEB_PACKAGES := libvulkan1 mesa-vulkan-drivers glslang-tools spirv-tools minisign vulkan-validationlayers swtpm swtpm-tools tpm2-tools libtss2-tcti-swtpm0 prometheus postgresql python3-venv
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# What building and boot-testing the appliance image needs (image/README.md).
IMAGE_DEB_PACKAGES := debootstrap squashfs-tools cryptsetup-bin mtools dosfstools fdisk binutils qemu-system-x86 ovmf openssl swtpm swtpm-tools tpm2-tools libtss2-tcti-swtpm0 sbsigntool python3-venv busybox-static cpio file
# virt-fw-vars enrols the image's Secure Boot certificate in the boot
# test's firmware variables (not packaged in Debian 12): pinned, in a venv.
IMAGE_VENV := target/image-venv
VIRT_FIRMWARE := virt-firmware==26.10
DEMO_DIR := target/demo
# Google's SwiftShader Vulkan driver, a second implementation for the
# cross-implementation tests (docs/float-model.md, "Implementations"): the
# two files it needs, taken from Debian's chromium-common package without
# installing Chromium. Fetched once; `make clean` removes it.
SWIFTSHADER_DIR := target/swiftshader
SWIFTSHADER_ICD := $(SWIFTSHADER_DIR)/usr/lib/chromium/vk_swiftshader_icd.json
LOCKSTEP := target/release/lockstep
# onnx, onnxruntime and numpy for the ONNX import tests (firmware/cli/tests/
# onnx_import.rs): onnxruntime is their independent reference. Pinned in
# requirements.txt, installed into a venv; made again when that file changes.
ONNX_VENV := target/onnx-venv
ONNX_REQUIREMENTS := firmware/cli/tests/onnx/requirements.txt
# The Python package (python/): maturin builds it, pytest tests it, in the
# same virtual environment as the ONNX reference (onnx-venv).
PY_REQUIREMENTS := python/requirements-dev.txt

# The NodeRegistry contract's pinned compiler and the local EVM node of the
# chain tests (contracts/README.md), installed by npm from package-lock.json.
# npm writes this file on every install, so it says what is installed and when.
CONTRACTS_INSTALLED := contracts/node_modules/.package-lock.json

.PHONY: deps swiftshader onnx-venv contracts-deps contracts demo test lint bench kernels image image-deps image-test clean wheel python-test

# install-missing PACKAGES: apt-get installs those not installed yet.
define install-missing
	@missing=""; for p in $(1); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi
endef

deps:
	$(call install-missing,$(DEB_PACKAGES))
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs"; exit 1; }

# Node.js from Debian only when there is no node at all (one installed
# otherwise, e.g. from NodeSource, already brings its own npm, which
# Debian's npm package would conflict with). npm ci runs again only when the
# lock file is newer than the last install: it deletes node_modules first.
contracts-deps:
ifeq ($(shell command -v node),)
	$(call install-missing,nodejs npm)
endif
	@command -v npm >/dev/null || { echo "npm not found: install Node.js with npm"; exit 1; }
	@if [ ! -f $(CONTRACTS_INSTALLED) ] || [ contracts/package-lock.json -nt $(CONTRACTS_INSTALLED) ]; then \
	  cd contracts && npm ci --no-audit --no-fund; \
	fi

# Recompile the contract after editing it (then commit contracts/out).
contracts: contracts-deps
	node contracts/compile.mjs

onnx-venv: $(ONNX_VENV)/installed

$(ONNX_VENV)/installed: $(ONNX_REQUIREMENTS) $(PY_REQUIREMENTS)
	rm -rf $(ONNX_VENV)
	python3 -m venv $(ONNX_VENV)
	$(ONNX_VENV)/bin/pip install -q --disable-pip-version-check -r $(ONNX_REQUIREMENTS) -r $(PY_REQUIREMENTS)
	cat $(ONNX_REQUIREMENTS) $(PY_REQUIREMENTS) > $@

# The `lockstep` Python package as an abi3 wheel (CPython >= 3.11) in
# target/wheels: pip install target/wheels/lockstep-*.whl.
wheel: deps onnx-venv
	cd python && $(CURDIR)/$(ONNX_VENV)/bin/maturin build --release --locked -o $(CURDIR)/target/wheels

# Idempotent: nothing happens when the ICD is already there. Only apt is
# asked for the package (the lists are refreshed once if it is unknown).
swiftshader: $(SWIFTSHADER_ICD)

$(SWIFTSHADER_ICD):
	@mkdir -p $(SWIFTSHADER_DIR)/deb
	@cd $(SWIFTSHADER_DIR)/deb && rm -f chromium-common_*.deb && \
	{ apt-get download -q chromium-common 2>/dev/null || \
	  { $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && apt-get download -q chromium-common; }; } || \
	{ echo "make swiftshader: apt-get download chromium-common failed; the cross-implementation tests need it (docs/float-model.md)"; exit 1; }
	@dpkg-deb --fsys-tarfile $(SWIFTSHADER_DIR)/deb/chromium-common_*.deb | \
	  tar -x -C $(SWIFTSHADER_DIR) ./usr/lib/chromium/libvk_swiftshader.so ./usr/lib/chromium/vk_swiftshader_icd.json
	@rm -rf $(SWIFTSHADER_DIR)/deb
	@echo "SwiftShader: $(SWIFTSHADER_ICD)"

# The main job on the default device: train the example MLP (60 Adam steps,
# 2136 traced ops) on Vulkan, print the loss curve, the trace root, the
# device and steps per second; then run it again on the CPU reference and
# show that both gave the same bits and the same trace root; the same job
# through a certified node; then three nodes training by reference
# (examples/swarm), the final receipt's lineage re-executed.
demo: deps
	$(CARGO) build --release -q -p lockstep-cli
	@mkdir -p $(DEMO_DIR)
	@echo "== lockstep exec examples/mlp-train.json (default device)"
	@$(LOCKSTEP) exec examples/mlp-train.json --out-dir $(DEMO_DIR)/vulkan
	@echo "== loss per step"
	@$(LOCKSTEP) show $(DEMO_DIR)/vulkan/losses.npy
	@echo "== the same program on the CPU reference"
	@$(LOCKSTEP) exec examples/mlp-train.json --out-dir $(DEMO_DIR)/cpu --backend cpu -q
	@for f in losses w1 b1 w2 b2; do \
	  cmp -s $(DEMO_DIR)/vulkan/$$f.npy $(DEMO_DIR)/cpu/$$f.npy || { echo "== MISMATCH in $$f: this device does not keep the float model"; exit 1; }; \
	done
	@root_v=$$(grep '"root"' $(DEMO_DIR)/vulkan/trace.json); root_c=$$(grep '"root"' $(DEMO_DIR)/cpu/trace.json); \
	if [ "$$root_v" = "$$root_c" ]; then echo "== bit-identical: outputs and trace root agree with the CPU reference ($$root_v)"; \
	else echo "== MISMATCH: trace roots differ"; exit 1; fi
	@echo "== the same job through a node: lockstepd on loopback, certified, lockstep submit, signed receipt"
	@$(CARGO) build --release -q -p lockstep-daemon -p lockstep-certify
	@rm -rf $(DEMO_DIR)/node && mkdir -p $(DEMO_DIR)/node
	@minisign -G -W -p $(DEMO_DIR)/node/certifier.pub -s $(DEMO_DIR)/node/certifier.key > /dev/null
	@target/release/lockstepd --file-key --listen 127.0.0.1:0 --state $(DEMO_DIR)/node/state \
	  --trust-certifier $(DEMO_DIR)/node/certifier.pub > $(DEMO_DIR)/node/stdout 2> $(DEMO_DIR)/node/log & echo $$! > $(DEMO_DIR)/node/pid; \
	trap 'kill $$(cat $(DEMO_DIR)/node/pid) 2>/dev/null' EXIT; \
	for i in $$(seq 100); do grep -q listening $(DEMO_DIR)/node/stdout 2>/dev/null && break; sleep 0.1; done; \
	addr=$$(sed -n 's/lockstepd listening on \([^ ]*\) as .*/\1/p' $(DEMO_DIR)/node/stdout); \
	key=$$($(LOCKSTEP) identity --state $(DEMO_DIR)/node/state | tail -n 1); \
	echo "node $$key at $$addr"; \
	echo "== the node refuses jobs until certified; certify it with a throw-away demo certifier key (docs/certification.md)"; \
	target/release/lockstep-certify --node $$addr --node-key $$key --key $(DEMO_DIR)/node/certifier.key \
	  --out $(DEMO_DIR)/node/certification.json --repeats 1 -q && \
	target/release/lockstep-certify install --node $$addr --node-key $$key --key $(DEMO_DIR)/node/certifier.key \
	  $(DEMO_DIR)/node/certification.json && \
	$(LOCKSTEP) submit --node $$addr --node-key $$key --receipt $(DEMO_DIR)/node/receipt.json \
	  exec examples/mlp-train.json --out-dir $(DEMO_DIR)/node/out && \
	echo "== receipt" && cat $(DEMO_DIR)/node/receipt.json && echo && \
	echo "== minisign -Vm receipt.json -P $$key" && minisign -Vm $(DEMO_DIR)/node/receipt.json -P $$key && \
	cmp -s $(DEMO_DIR)/node/out/losses.npy $(DEMO_DIR)/cpu/losses.npy && \
	echo "== the node's outputs equal the local CPU reference's, bit for bit"
	@echo "== three nodes exchange tensors by reference: examples/swarm/run.sh (2 rounds; lineage re-executed on the CPU reference)"
	@rm -rf $(DEMO_DIR)/swarm
	@LOCKSTEP=$(LOCKSTEP) LOCKSTEPD=target/release/lockstepd ROUNDS=2 LINEAGE_FLAGS=--reexecute \
	  examples/swarm/run.sh $(DEMO_DIR)/swarm

# The last line totals every test binary's results, so one line says it all.
# The test-only fault injection is lockstep-daemon's own feature, turned on
# here explicitly (no dependency turns it on); the second run rebuilds
# lockstepd without it and proves that build refuses --inject-fault. Then
# the Vulkan tests and the examples run again under the Khronos validation
# layer (.ci/validation.sh): any message fails the run. The contract's
# committed bytecode must be what its source compiles to (contracts/check.mjs).
test: deps swiftshader contracts-deps onnx-venv
	@mkdir -p target
	set -o pipefail; LOCKSTEP_SWIFTSHADER_ICD=$(CURDIR)/$(SWIFTSHADER_ICD) LOCKSTEP_ONNX_PYTHON=$(CURDIR)/$(ONNX_VENV)/bin/python $(CARGO) test --workspace --locked --features lockstep-daemon/fault-injection 2>&1 | tee target/test-output.log
	set -o pipefail; $(CARGO) test --locked -p lockstep-daemon --test node -- a_build_without_the_test_feature 2>&1 | tee -a target/test-output.log
	node contracts/check.mjs
	$(MAKE) --no-print-directory python-test
	.ci/validation.sh $(CURDIR)/$(SWIFTSHADER_ICD)
	@awk '/^test result:/ {p += $$4; f += $$6} END {printf "tests: %d passed, %d failed\n", p, f}' target/test-output.log

# The Python package's pytest suite, on a wheel built with the dev profile
# (it reuses what `cargo test` compiled; `make wheel` builds the release
# one) and installed into the test venv, against a real lockstepd.
python-test: onnx-venv
	rm -rf target/wheels-test
	cd python && $(CURDIR)/$(ONNX_VENV)/bin/maturin build --profile dev --locked -q -o $(CURDIR)/target/wheels-test
	$(ONNX_VENV)/bin/pip install -q --disable-pip-version-check --force-reinstall --no-deps target/wheels-test/lockstep-*.whl
	$(CARGO) build --locked -q -p lockstep-daemon -p lockstep-cli
	set -o pipefail; LOCKSTEPD=$(CURDIR)/target/debug/lockstepd LOCKSTEP=$(CURDIR)/target/debug/lockstep \
	  $(ONNX_VENV)/bin/pytest -q -p no:cacheprovider python/tests 2>&1 | tee target/python-test.log
	@awk '/ passed/ {for (i = 1; i < NF; i++) if ($$(i+1) ~ /^passed/) p = $$i} END {printf "python tests: %d passed\n", p}' target/python-test.log

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

bench: deps
	$(CARGO) build --release -q -p lockstep-cli
	$(LOCKSTEP) bench

# Rebuild the pinned SPIR-V after editing a kernel (then commit the result).
kernels: deps
	kernels-spirv/build.sh

# The appliance image (image/README.md): image/out/lockstep-VERSION.raw,
# its manifest, minisign signatures. Settings: GPU=nvidia, DEBUG=1,
# VERSION=..., SIGNING_KEY=..., PCR_KEY=..., SB_KEY=... SB_CERT=..., BOOT_TRIES=...,
# PROVISION=..., LOCK=update.
image-deps: deps
	$(call install-missing,$(IMAGE_DEB_PACKAGES))

image: image-deps
	$(CARGO) build --release --locked -q -p lockstep-daemon
	$(SUDO) env LOCKSTEPD=$(CURDIR)/target/release/lockstepd GPU="$(GPU)" DEBUG="$(DEBUG)" \
	  VERSION="$(VERSION)" SIGNING_KEY="$(SIGNING_KEY)" PCR_KEY="$(PCR_KEY)" PROVISION="$(PROVISION)" LOCK="$(LOCK)" \
	  SB_KEY="$(SB_KEY)" SB_CERT="$(SB_CERT)" BOOT_TRIES="$(BOOT_TRIES)" NVIDIA_BRANCH="$(NVIDIA_BRANCH)" \
	  image/build.sh

# Boots the image in QEMU and proves it serves (and that a tampered root
# does not).
image-test: image
	$(CARGO) build --locked -q -p lockstep-cli -p lockstep-fleet
	@[ -x $(IMAGE_VENV)/bin/virt-fw-vars ] || { python3 -m venv $(IMAGE_VENV) && $(IMAGE_VENV)/bin/pip install -q $(VIRT_FIRMWARE); }
	$(SUDO) env PCR_KEY="$(PCR_KEY)" SB_KEY="$(SB_KEY)" SB_CERT="$(SB_CERT)" image/test.sh

clean:
	$(CARGO) clean
