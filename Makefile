# Lockstep: the two set-up commands are `make demo` and `make test`; both
# install what is missing first.

SHELL := /bin/bash
CARGO ?= cargo
# Debian packages the build, the tests and the demo need: the Vulkan loader,
# Mesa's lavapipe (a CPU Vulkan device), and the pinned shader toolchain.
DEB_PACKAGES := libvulkan1 mesa-vulkan-drivers glslang-tools spirv-tools
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_DIR := target/demo
LOCKSTEP := target/release/lockstep

.PHONY: deps demo test lint bench kernels clean

deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@command -v $(CARGO) >/dev/null || { echo "cargo not found: install Rust from https://rustup.rs"; exit 1; }

# A real job on the default device: a 1024x1024 matmul on Vulkan, the same
# job on the CPU reference, and the proof that both gave the same bits.
demo: deps
	$(CARGO) build --release -q -p lockstep-cli
	@mkdir -p $(DEMO_DIR)
	@$(LOCKSTEP) random --shape 1024,1024 --seed 1 --out $(DEMO_DIR)/a.npy
	@$(LOCKSTEP) random --shape 1024,1024 --seed 2 --out $(DEMO_DIR)/b.npy
	@echo "== lockstep devices"; $(LOCKSTEP) devices
	@echo "== lockstep run matmul a.npy b.npy (default device)"
	@$(LOCKSTEP) run matmul $(DEMO_DIR)/a.npy $(DEMO_DIR)/b.npy --out $(DEMO_DIR)/c_vulkan.npy
	@echo "== the same job on the CPU reference"
	@$(LOCKSTEP) run matmul $(DEMO_DIR)/a.npy $(DEMO_DIR)/b.npy --out $(DEMO_DIR)/c_cpu.npy --backend cpu
	@if cmp -s $(DEMO_DIR)/c_vulkan.npy $(DEMO_DIR)/c_cpu.npy; then \
	  echo "== bit-identical: the Vulkan device and the CPU reference agree on every bit"; \
	else echo "== MISMATCH: this device does not keep the float model"; exit 1; fi

# The last line totals every test binary's results, so one line says it all.
test: deps
	@mkdir -p target
	set -o pipefail; $(CARGO) test --workspace --locked 2>&1 | tee target/test-output.log
	@awk '/^test result:/ {p += $$4; f += $$6} END {printf "tests: %d passed, %d failed\n", p, f}' target/test-output.log

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

bench: deps
	$(CARGO) build --release -q -p lockstep-cli
	$(LOCKSTEP) bench

# Rebuild the pinned SPIR-V after editing a kernel (then commit the result).
kernels: deps
	kernels-spirv/build.sh

clean:
	$(CARGO) clean
