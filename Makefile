# drover — top-level Makefile. `make help` lists the targets.
#
#   make              drover, libdrover.{a,so}, drover.pc, examples  (into $(B)/)
#   make test         unit + integration tests (the README's test command)
#   make SAN=1 test   the same, built with AddressSanitizer + UndefinedBehaviorSanitizer
#   make fuzz         build and run the two fuzzers (report decoder, control protocol), FUZZ_SECONDS each (clang, libFuzzer)
#   make test-valgrind  the integration tests with every hub under valgrind
#   make bench        print the benchmark tables
#   make deps         install missing Debian packages (needs root or sudo)
#   make demo         deps + build, then run the example cluster (Ctrl-C stops it)
#   make install PREFIX=/usr/local

PREFIX   ?= /usr/local
VERSION  := 0.1.0
PKGS     := ncursesw libproc2 msgpack libuv jansson zlib libsystemd inih
# libmicrohttpd: headers only; hub/metrics.c loads it with dlopen for --metrics
# (its GnuTLS stack would cost every hub ~2 MiB of resident pages).
DLPKGS   := libmicrohttpd
CC       ?= cc
PYTHON   ?= /usr/bin/python3
SAN      ?= 0

ifeq ($(SAN),1)
B        ?= build-san
SANFLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
else
B        ?= build
SANFLAGS :=
endif

WARN     := -Wall -Wextra -Wshadow -Wformat=2 -Werror
CFLAGS   ?= -O2 -g
CPPFLAGS += -D_GNU_SOURCE -DDROVER_VERSION=\"$(VERSION)\" -DDROVER_LIBDIR=\"$(PREFIX)/lib/drover\" -I.
ALLCFLAGS = -std=c11 $(WARN) $(CFLAGS) $(SANFLAGS) -pthread -MMD -MP
PC_CFLAGS = $(shell pkg-config --cflags $(PKGS) $(DLPKGS) 2>/dev/null)
PC_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)
MSGPACK_CFLAGS = $(shell pkg-config --cflags msgpack 2>/dev/null)
MSGPACK_LIBS   = $(shell pkg-config --libs msgpack 2>/dev/null)
UV_CFLAGS = $(shell pkg-config --cflags libuv 2>/dev/null)
UV_LIBS   = $(shell pkg-config --libs libuv 2>/dev/null)
CMOCKA_LIBS = $(shell pkg-config --libs cmocka 2>/dev/null)

# proto/control.c (the control protocol, jansson) and proto/text.c (text made
# safe for a terminal) belong to the hub and the views only; the agent
# carries the report encoder and nothing else.
CTL_SRC   := proto/control.c proto/text.c
PROTO_SRC := $(filter-out $(CTL_SRC),$(wildcard proto/*.c))
AGENT_SRC := $(wildcard agent/*.c)
HUB_SRC   := $(wildcard hub/*.c) $(CTL_SRC)
TUI_SRC   := $(wildcard tui/*.c)
EX_SRC    := $(wildcard examples/*.c)
UNIT_SRC  := $(wildcard tests/unit/test_*.c)
BENCH_SRC := $(wildcard bench/*.c)

PROTO_OBJ := $(PROTO_SRC:%.c=$(B)/%.o)
AGENT_OBJ := $(AGENT_SRC:%.c=$(B)/%.o)
AGENT_PIC := $(AGENT_SRC:%.c=$(B)/pic/%.o) $(PROTO_SRC:%.c=$(B)/pic/%.o)
HUB_OBJ   := $(HUB_SRC:%.c=$(B)/%.o)
TUI_OBJ   := $(TUI_SRC:%.c=$(B)/%.o)

DROVER    := $(B)/drover
LIBA      := $(B)/libdrover.a
LIBSO     := $(B)/libdrover.so
PCFILE    := $(B)/drover.pc
EXAMPLES  := $(EX_SRC:examples/%.c=$(B)/examples/%)
UNITS     := $(UNIT_SRC:tests/unit/%.c=$(B)/tests/%)
BENCHES   := $(BENCH_SRC:bench/%.c=$(B)/bench/%)

.PHONY: all test unit integration test-valgrind fuzz bench deps demo install clean help check-deps
all: check-deps $(DROVER) $(LIBA) $(LIBSO) $(PCFILE) $(EXAMPLES)

help:
	@sed -n '1,/^$$/p' Makefile | sed 's/^# \{0,1\}//'

# Fail early with one clear line instead of a page of missing-header errors.
check-deps:
	@pkg-config --exists $(PKGS) $(DLPKGS) cmocka || { echo "drover: missing build dependencies; run 'make deps' (installs Debian packages, needs root or sudo)" >&2; exit 1; }

deps:
	@sh tools/install-deps.sh

demo:
	@sh tools/install-deps.sh
	@$(MAKE) --no-print-directory all
	@sh examples/demo.sh $(B)

# ---- objects -------------------------------------------------------------
$(B)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALLCFLAGS) $(PC_CFLAGS) -c $< -o $@

$(B)/pic/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALLCFLAGS) $(MSGPACK_CFLAGS) -fPIC -fvisibility=hidden -c $< -o $@

# ---- agent library -------------------------------------------------------
# The agent carries its own copy of the encoder (proto/), so libdrover only
# needs libmsgpackc (the packer is header-inline; nothing is linked from it).
$(LIBA): $(AGENT_OBJ) $(PROTO_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(LIBSO): $(AGENT_PIC)
	$(CC) -shared $(ALLCFLAGS) -Wl,-soname,libdrover.so.0 -o $@ $^ $(MSGPACK_LIBS)

$(PCFILE): agent/drover.pc.in
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' $< > $@

# ---- hub / CLI -----------------------------------------------------------
$(DROVER): $(TUI_OBJ) $(HUB_OBJ) $(PROTO_OBJ)
	$(CC) $(ALLCFLAGS) -o $@ $^ $(PC_LIBS) -lm

# ---- examples ------------------------------------------------------------
$(B)/examples/%: examples/%.c $(LIBA)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALLCFLAGS) $(PC_CFLAGS) -o $@ $< $(LIBA) $(MSGPACK_LIBS) $(UV_LIBS) -lm

# ---- tests ---------------------------------------------------------------
$(B)/tests/%: tests/unit/%.c $(PROTO_OBJ) $(AGENT_OBJ) $(HUB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALLCFLAGS) $(PC_CFLAGS) -o $@ $< $(PROTO_OBJ) $(AGENT_OBJ) $(HUB_OBJ) $(PC_LIBS) $(CMOCKA_LIBS) -lm

# The console's model and key table draw nothing: tested without a terminal.
CONSOLE_UNIT_OBJ := $(B)/tui/console_model.o $(B)/tui/keys.o $(B)/tui/columns.o $(B)/tui/human.o
$(B)/tests/test_console: tests/unit/test_console.c $(CONSOLE_UNIT_OBJ) $(PROTO_OBJ) $(AGENT_OBJ) $(HUB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALLCFLAGS) $(PC_CFLAGS) -o $@ $< $(CONSOLE_UNIT_OBJ) $(PROTO_OBJ) $(AGENT_OBJ) $(HUB_OBJ) $(PC_LIBS) $(CMOCKA_LIBS) -lm

# The ssh target parser and command line: no terminal, no ssh run.
SSHLINK_UNIT_OBJ := $(B)/tui/sshlink.o
$(B)/tests/test_sshlink: tests/unit/test_sshlink.c $(SSHLINK_UNIT_OBJ) $(PROTO_OBJ) $(AGENT_OBJ) $(HUB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALLCFLAGS) $(PC_CFLAGS) -o $@ $< $(SSHLINK_UNIT_OBJ) $(PROTO_OBJ) $(AGENT_OBJ) $(HUB_OBJ) $(PC_LIBS) $(CMOCKA_LIBS) -lm

unit: $(UNITS)
	@sh tests/run-unit.sh $(UNITS)

integration: all
	DROVER_BUILD=$(abspath $(B)) $(PYTHON) -m pytest -q tests/integration

test: all unit integration

# The hub under valgrind on the integration tests that exercise it most: any
# leak ("definite"/"indirect") or memory error fails the test that started it.
# Left out: load and timing tests (wrk, scale 1024, 300 followers, the metrics
# endpoint's 50 scrapers, 70 trickling clients and slowloris, the real
# Prometheus): under valgrind they cost the most time (CI's budget), and the
# code they drive is run under valgrind by the lighter tests beside them (the
# endpoint, the text file, config-file and attach hubs' metrics).
VALGRIND = valgrind -q --leak-check=full --errors-for-leak-kinds=definite,indirect \
           --error-exitcode=99 --suppressions=$(abspath tests/valgrind.supp)
VALGRIND_TESTS ?= tests/integration/test_report_path.py tests/integration/test_cli.py \
           tests/integration/test_supervisor.py tests/integration/test_metrics.py \
           tests/integration/test_hardening.py
test-valgrind: all
	DROVER_BUILD=$(abspath $(B)) DROVER_WRAP="$(VALGRIND)" $(PYTHON) -m pytest -q \
	    -k "not wrk and not crash_loop and not footprint and not max_memory and not 300_never and not scale_1024 and not real_prometheus and not 50_concurrent and not 70_trickling and not malformed_http" \
	    $(VALGRIND_TESTS)

# ---- fuzz ----------------------------------------------------------------
FUZZ_SECONDS ?= 20
$(B)/fuzz/fuzz_report: tests/fuzz/fuzz_report.c $(PROTO_SRC)
	@mkdir -p $(dir $@)
	clang $(CPPFLAGS) -g -O1 -fsanitize=fuzzer,address,undefined $(MSGPACK_CFLAGS) -o $@ $^ $(MSGPACK_LIBS)

$(B)/fuzz/fuzz_control: tests/fuzz/fuzz_control.c $(CTL_SRC)
	@mkdir -p $(dir $@)
	clang $(CPPFLAGS) -g -O1 -fsanitize=fuzzer,address,undefined $(PC_CFLAGS) -o $@ $^ -ljansson

# Each fuzzer runs FUZZ_SECONDS: the report socket's parsers, then the control socket's.
fuzz: $(B)/fuzz/fuzz_report $(B)/fuzz/fuzz_control
	@mkdir -p $(B)/fuzz/corpus $(B)/fuzz/control_corpus
	$(B)/fuzz/fuzz_report -max_total_time=$(FUZZ_SECONDS) -max_len=8192 -rss_limit_mb=512 -malloc_limit_mb=64 $(B)/fuzz/corpus tests/fuzz/seeds
	$(B)/fuzz/fuzz_control -max_total_time=$(FUZZ_SECONDS) -max_len=8192 -rss_limit_mb=512 -malloc_limit_mb=64 $(B)/fuzz/control_corpus tests/fuzz/control_seeds

# ---- benchmarks ----------------------------------------------------------
$(B)/bench/%: bench/%.c $(LIBA) $(PROTO_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(ALLCFLAGS) $(PC_CFLAGS) -o $@ $< $(LIBA) $(PC_LIBS) -lm

bench: all $(BENCHES)
	@sh bench/run.sh $(abspath $(B))

# ---- install -------------------------------------------------------------
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include
	install -m 755 $(DROVER) $(DESTDIR)$(PREFIX)/bin/drover
	install -m 644 $(LIBA) $(DESTDIR)$(PREFIX)/lib/libdrover.a
	install -m 755 $(LIBSO) $(DESTDIR)$(PREFIX)/lib/libdrover.so.0
	ln -sf libdrover.so.0 $(DESTDIR)$(PREFIX)/lib/libdrover.so
	install -m 644 agent/drover.h agent/drover_uv.h $(DESTDIR)$(PREFIX)/include/
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' agent/drover.pc.in \
	    > $(DESTDIR)$(PREFIX)/lib/pkgconfig/drover.pc
	if [ -f $(B)/node/drover_agent.node ]; then $(MAKE) --no-print-directory install-node; fi

clean:
	rm -rf build build-san

# The Node.js agent (agent/node/): its own fragment, built when Node's headers exist.
-include agent/node/node.mk

-include $(shell find $(B) -name '*.d' 2>/dev/null)
