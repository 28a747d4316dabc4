# otpd — build, install, test.
#
#   make install     build (release) and install otpd, otpctl, pam_otpd.so,
#                    /etc/otpd/otpd.toml (kept if present), the systemd
#                    unit and /etc/logrotate.d/otpd; start the daemon. Run
#                    as root.
#   make uninstall   remove what install put in place; keeps /etc/otpd and
#                    the store in /var/lib/otpd.
#   make test        every test (unit, integration, PAM, SSH), plus fmt and
#                    clippy, then a short run of every fuzz target. What CI
#                    runs.
#   make fuzz-ci     each fuzz target for FUZZ_SECONDS (20) after replaying
#                    its checked-in corpus; no cargo-fuzz needed.
#   make fuzz-run FUZZ_TARGET=code FUZZ_SECONDS=3600   one target, long.
#   make bench       verify latency over the socket (release build).
#   make bench-import  a million pam_oath users imported (release build).
#   make bench-load  Verify decisions per second, 64 callers (release build).
#   make bench-compare pam_otpd beside pam_permit, google-authenticator and
#                    pam_oath, one pamtester login each (root; installs them).
#   make bench-scale   Verify, status and listing latency, disk and memory
#                    at 1, 10,000 and 1,000,000 users (release build).
#   make bench-e2e   whole pamtester logins per second, 4 parallel loops,
#                    pam_permit then pam_otpd (root; release build).
#   make demo        a real SSH login with a TOTP code on 127.0.0.1.
#   make deb         build (release) and package otpd_VERSION_ARCH.deb here
#                    (dist/deb/build-deb, dpkg-deb); apt install ./otpd_*.deb

PREFIX     ?= /usr/local
SBINDIR    ?= $(PREFIX)/sbin
DOCDIR     ?= $(PREFIX)/share/doc/otpd
SYSCONFDIR ?= /etc
UNITDIR    ?= /etc/systemd/system
LOGROTATEDIR ?= $(SYSCONFDIR)/logrotate.d
MANDIR     ?= $(PREFIX)/share/man
# Where bash-completion, zsh and fish look (Debian's zsh has
# /usr/local/share/zsh/site-functions and /usr/share/zsh/vendor-completions
# in its fpath).
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR  ?= $(if $(filter /usr,$(PREFIX)),/usr/share/zsh/vendor-completions,$(PREFIX)/share/zsh/site-functions)
FISHCOMPDIR ?= $(PREFIX)/share/fish/vendor_completions.d
# Where this system's PAM modules live (next to pam_unix.so).
PAMDIR     ?= $(shell dirname "$$(find /lib /usr/lib /lib64 /usr/lib64 -name pam_unix.so -path '*security*' 2>/dev/null | head -n 1)" 2>/dev/null)
CARGO      ?= cargo
APT_PACKAGES = libpam0g-dev pkg-config

.PHONY: all build deps install uninstall deb test lint bench bench-import bench-compare bench-load demo clean fuzz-build fuzz-ci fuzz-run

all: build

deps:
	@if command -v apt-get >/dev/null 2>&1; then \
		missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
		if [ -n "$$missing" ]; then \
			echo "installing build dependencies:$$missing"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
		fi; \
	fi
	@command -v $(CARGO) >/dev/null 2>&1 || { echo "error: cargo not found; install Rust >= 1.88 (https://rustup.rs)"; exit 1; }

build: deps
	$(CARGO) build --release --locked --workspace

install: build
	@[ "$$(id -u)" = 0 ] || { echo "error: make install must run as root"; exit 1; }
	@[ -n "$(PAMDIR)" ] || { echo "error: cannot find the PAM module directory; set PAMDIR=..."; exit 1; }
	install -d -m 0755 $(DESTDIR)$(SBINDIR) $(DESTDIR)$(PAMDIR) $(DESTDIR)$(DOCDIR)
	install -m 0755 target/release/otpd $(DESTDIR)$(SBINDIR)/otpd
	install -m 0755 target/release/otpctl $(DESTDIR)$(SBINDIR)/otpctl
	install -m 0644 target/release/libpam_otpd.so $(DESTDIR)$(PAMDIR)/pam_otpd.so
	install -m 0644 README.md otpd.toml.example $(DESTDIR)$(DOCDIR)/
	install -d -m 0755 $(DESTDIR)$(MANDIR)/man8 $(DESTDIR)$(MANDIR)/man5 \
		$(DESTDIR)$(BASHCOMPDIR) $(DESTDIR)$(ZSHCOMPDIR) $(DESTDIR)$(FISHCOMPDIR)
	target/release/otpd --man-page > $(DESTDIR)$(MANDIR)/man8/otpd.8
	target/release/otpctl generate man $(DESTDIR)$(MANDIR)/man8
	install -m 0644 dist/man/pam_otpd.8 $(DESTDIR)$(MANDIR)/man8/pam_otpd.8
	install -m 0644 dist/man/otpd.toml.5 $(DESTDIR)$(MANDIR)/man5/otpd.toml.5
	target/release/otpctl generate completions bash $(DESTDIR)$(BASHCOMPDIR)
	target/release/otpctl generate completions zsh $(DESTDIR)$(ZSHCOMPDIR)
	target/release/otpctl generate completions fish $(DESTDIR)$(FISHCOMPDIR)
	install -d -m 0755 $(DESTDIR)$(SYSCONFDIR)/otpd
	@if [ -e $(DESTDIR)$(SYSCONFDIR)/otpd/otpd.toml ]; then \
		echo "keeping existing $(SYSCONFDIR)/otpd/otpd.toml"; \
	else \
		install -m 0644 otpd.toml.example $(DESTDIR)$(SYSCONFDIR)/otpd/otpd.toml; \
	fi
	install -d -m 0755 $(DESTDIR)$(LOGROTATEDIR)
	install -m 0644 dist/otpd.logrotate $(DESTDIR)$(LOGROTATEDIR)/otpd
	install -d -m 0755 $(DESTDIR)$(UNITDIR)
	sed 's|@SBINDIR@|$(SBINDIR)|g' dist/otpd.service > $(DESTDIR)$(UNITDIR)/otpd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/otpd.service
	@if [ -n "$(DESTDIR)" ]; then exit 0; fi; \
	if [ -d /run/systemd/system ]; then \
		systemctl daemon-reload && systemctl enable otpd.service && systemctl restart otpd.service && \
		echo "otpd enabled and started (systemctl status otpd)"; \
	else \
		echo "systemd is not running here: starting otpd directly (log: /var/log/otpd.log)"; \
		pkill -x otpd 2>/dev/null && sleep 1; \
		[ -e /var/log/otpd.log ] || install -m 0600 /dev/null /var/log/otpd.log; \
		setsid $(SBINDIR)/otpd --config $(SYSCONFDIR)/otpd/otpd.toml >>/var/log/otpd.log 2>&1 < /dev/null & \
		for i in 1 2 3 4 5 6 7 8 9 10; do [ -S /run/otpd/otpd.sock ] && break; sleep 0.5; done; \
		[ -S /run/otpd/otpd.sock ] || { echo "error: otpd did not start; see /var/log/otpd.log"; exit 1; }; \
	fi
	@echo "installed: $(SBINDIR)/otpd $(SBINDIR)/otpctl $(PAMDIR)/pam_otpd.so"
	@echo "next: otpctl enroll USER, then see README 'Protect SSH'"

uninstall:
	@[ "$$(id -u)" = 0 ] || { echo "error: make uninstall must run as root"; exit 1; }
	@if grep -ls pam_otpd /etc/pam.d/* >/dev/null 2>&1; then \
		echo "warning: these PAM files still use pam_otpd and will refuse logins:"; grep -ls pam_otpd /etc/pam.d/*; fi
	-@if [ -d /run/systemd/system ]; then systemctl disable --now otpd.service 2>/dev/null; fi
	-@pkill -x otpd 2>/dev/null || true
	rm -f $(DESTDIR)$(UNITDIR)/otpd.service $(DESTDIR)$(SBINDIR)/otpd $(DESTDIR)$(SBINDIR)/otpctl
	rm -f $(DESTDIR)$(LOGROTATEDIR)/otpd
	@[ -z "$(PAMDIR)" ] || rm -f $(DESTDIR)$(PAMDIR)/pam_otpd.so
	rm -rf $(DESTDIR)$(DOCDIR)
	rm -f $(DESTDIR)$(MANDIR)/man8/otpd.8 $(DESTDIR)$(MANDIR)/man8/otpctl.8 \
		$(DESTDIR)$(MANDIR)/man8/otpctl-*.8 $(DESTDIR)$(MANDIR)/man8/pam_otpd.8 \
		$(DESTDIR)$(MANDIR)/man5/otpd.toml.5
	rm -f $(DESTDIR)$(BASHCOMPDIR)/otpctl $(DESTDIR)$(ZSHCOMPDIR)/_otpctl \
		$(DESTDIR)$(FISHCOMPDIR)/otpctl.fish
	-@[ -d /run/systemd/system ] && systemctl daemon-reload || true
	@echo "kept $(SYSCONFDIR)/otpd and the store in /var/lib/otpd (remove them by hand to erase all secrets)"

# The Debian package from the release build: otpd_VERSION_ARCH.deb in this
# directory (dist/deb/build-deb: dpkg-deb, no debhelper or cargo-deb).
deb: build
	@command -v dpkg-shlibdeps >/dev/null 2>&1 || { echo "error: make deb needs dpkg-dev (apt-get install dpkg-dev)"; exit 1; }
	sh dist/deb/build-deb target/release .

lint:
	$(CARGO) fmt --all --check
	$(CARGO) fmt --manifest-path fuzz/Cargo.toml --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

test: deps lint
	$(CARGO) build --workspace --all-targets --locked
	$(CARGO) test --workspace --locked
	$(MAKE) fuzz-ci

# Fuzzing: the targets in fuzz/ built as `cargo fuzz build --sanitizer none`
# builds them (libFuzzer, sanitizer coverage, release, one codegen unit), but
# with plain cargo, so that neither cargo-fuzz nor a nightly toolchain is
# needed. Crashes land in fuzz/artifacts/<target>/; see README, "Fuzzing".
FUZZ_TARGETS = code user_name config sealed_record pam_answer grpc_request app_password \
	google_authenticator users_oath otpauth google_migration otpd_backup otpd_export \
	pam_config proc_stat h2_reply
FUZZ_SECONDS ?= 20
FUZZ_TARGET  ?= grpc_request
FUZZ_TRIPLE  := $(shell rustc -vV 2>/dev/null | sed -n 's/^host: //p')
FUZZ_BIN      = fuzz/target/$(FUZZ_TRIPLE)/release
FUZZ_RUSTFLAGS = -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
	-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
	-Cllvm-args=-sanitizer-coverage-pc-table \
	-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing \
	-Cllvm-args=-simplifycfg-branch-fold-threshold=0 \
	-Cllvm-args=-sanitizer-coverage-stack-depth -Cdebug-assertions -Ccodegen-units=1

fuzz-build:
	cd fuzz && RUSTFLAGS="$(FUZZ_RUSTFLAGS)" $(CARGO) build --locked --release \
		--config 'profile.release.debug="line-tables-only"' --target $(FUZZ_TRIPLE) --bins

# Replays every checked-in input (the regression seeds included), then
# fuzzes each target for FUZZ_SECONDS; new finds go to a scratch directory,
# not into the checked-in corpus.
fuzz-ci: fuzz-build
	@set -e; for t in $(FUZZ_TARGETS); do \
		mkdir -p fuzz/artifacts/$$t; \
		scratch=$$(mktemp -d); log=$$scratch.log; status=0; \
		$(FUZZ_BIN)/$$t -runs=0 -artifact_prefix=fuzz/artifacts/$$t/ \
			fuzz/corpus/$$t >$$log 2>&1 || status=$$?; \
		[ $$status = 0 ] && { $(FUZZ_BIN)/$$t -max_total_time=$(FUZZ_SECONDS) \
			-print_final_stats=1 -artifact_prefix=fuzz/artifacts/$$t/ \
			$$scratch fuzz/corpus/$$t >$$log 2>&1 || status=$$?; }; \
		echo "fuzz $$t: $$(sed -n -e 's/^stat::number_of_executed_units: */executions /p' \
			-e 's/^stat::average_exec_per_sec: */per second /p' $$log | paste -sd, -)"; \
		if [ $$status != 0 ]; then tail -n 40 $$log; rm -rf $$scratch $$log; \
			echo "fuzz $$t FAILED (exit $$status); the input is in fuzz/artifacts/$$t/"; exit 1; fi; \
		rm -rf $$scratch $$log; \
	done

# One target for a long time, growing its checked-in corpus.
fuzz-run: fuzz-build
	mkdir -p fuzz/artifacts/$(FUZZ_TARGET)
	$(FUZZ_BIN)/$(FUZZ_TARGET) -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 \
		-artifact_prefix=fuzz/artifacts/$(FUZZ_TARGET)/ fuzz/corpus/$(FUZZ_TARGET)

bench:
	$(CARGO) bench -p otpd-tests --bench verify_latency --locked

# A million pam_oath users imported into the built otpd (release builds);
# OTPD_BENCH_USERS=N for another number. Prints the time, users/s, the
# store's size per user and the peak RSS of otpd and otpctl.
bench-import:
	$(CARGO) build --release --locked -p otpd -p otpctl
	$(CARGO) bench -p otpd-tests --bench bulk_import --locked

# The daemon under load: 64 callers on persistent connections, a mix of
# accepted codes, wrong codes and status reads (OTPD_LOAD_USERS,
# OTPD_LOAD_CALLERS, OTPD_LOAD_SECONDS).
bench-load:
	$(CARGO) bench -p otpd-tests --bench verify_load --locked

# The side-by-side table of the README's performance section: the peers
# from Debian's packages, a syslog listener, interleaved series (root).
# OTPD_COMPARE_BEFORE=/path/to/libpam_otpd.so adds an older build.
bench-compare:
	@for p in pamtester libpam-google-authenticator libpam-oath; do \
		dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then apt-get install -y --no-install-recommends $$missing; fi
	$(CARGO) bench -p otpd-tests --bench compare --locked

# The same figures at 1, 10,000 and 1,000,000 users, each store filled by
# a bulk import: store size per user, otpd's RSS at rest, after a load and
# its peak, Verify and GetStatus p50/p99, the first ListUsers page, the
# time to otpctl status's first line, a filter that matches nobody; a
# backup-code storm at the largest size. OTPD_BENCH_SCALE=1,10000 for other
# sizes.
.PHONY: bench-e2e
bench-e2e:
	$(CARGO) bench -p otpd-tests --bench e2e --locked

.PHONY: bench-scale
bench-scale:
	$(CARGO) build --release --locked -p otpd -p otpctl
	$(CARGO) bench -p otpd-tests --bench scale --locked

demo:
	$(CARGO) build --workspace --locked
	/usr/bin/python3 tests/ssh/demo.py

clean:
	$(CARGO) clean
