# agent/node/node.mk — the Node.js agent, included by the top Makefile.
#
#   make node-agent        $(B)/node/drover_agent.node + the JavaScript beside it
#   make install-node      into $(DESTDIR)$(PREFIX)/lib/drover/node/
#
# The addon is built with gcc against the installed Node headers
# (/usr/include/node/node_api.h; Debian: nodejs or libnode-dev) — no node-gyp,
# no header download. `all` builds it only when those headers exist.
#
# It links its own copy of the agent (agent/*.c, proto/*.c) compiled here into
# $(B)/node/obj/ — position-independent, hidden visibility, and never with
# SANFLAGS: with SAN=1 the shared $(B)/pic objects carry ASan, and an ASan
# object cannot be loaded into a node binary that was not started under ASan.
# It exports only Node's module entry points (addon.map). Unused code (the
# report decoder, which is all that calls into libmsgpackc; the encoder is
# header-inline) is garbage-collected at link time, so the addon is linked
# without libmsgpackc and needs none at run time — the link checks that no
# msgpack symbol is left undefined. --exclude-libs keeps any static
# library's symbols out of node's global namespace.

NODE_INCLUDE ?= /usr/include/node
NODE_HEADER  := $(NODE_INCLUDE)/node_api.h
NODE_OUT     := $(B)/node
NODE_ADDON   := $(NODE_OUT)/drover_agent.node
NODE_JS_SRC  := $(filter-out agent/node/build.js,$(wildcard agent/node/*.js))
NODE_FILES   := $(NODE_JS_SRC:agent/node/%=$(NODE_OUT)/%) $(NODE_OUT)/package.json $(NODE_OUT)/README.md
NODE_OBJ     := $(AGENT_SRC:%.c=$(NODE_OUT)/obj/%.o) $(PROTO_SRC:%.c=$(NODE_OUT)/obj/%.o) \
                $(NODE_OUT)/obj/agent/node/addon.o
# ALLCFLAGS minus SANFLAGS (see above), plus what a shared object needs.
NODE_CFLAGS  := -std=c11 $(WARN) $(CFLAGS) -pthread -MMD -MP -fPIC -fvisibility=hidden \
                -ffunction-sections -fdata-sections
NODE_LDFLAGS := -shared -fPIC -pthread -Wl,--exclude-libs,ALL -Wl,--gc-sections \
                -Wl,--version-script=agent/node/addon.map

.PHONY: node-agent install-node

node-agent: $(NODE_ADDON) $(NODE_FILES)

$(NODE_OUT)/obj/agent/node/addon.o: agent/node/addon.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(NODE_CFLAGS) $(MSGPACK_CFLAGS) -I$(NODE_INCLUDE) -c $< -o $@

$(NODE_OUT)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(NODE_CFLAGS) $(MSGPACK_CFLAGS) -c $< -o $@

$(NODE_ADDON): $(NODE_OBJ) agent/node/addon.map
	@mkdir -p $(dir $@)
	$(CC) $(NODE_LDFLAGS) -o $@.tmp $(NODE_OBJ)
	@if nm -u $@.tmp | grep -q msgpack_; then \
		echo "drover: $@ still needs libmsgpackc symbols: $$(nm -u $@.tmp | grep msgpack_ | tr -s ' \n' ' ')" >&2; \
		rm -f $@.tmp; exit 1; fi
	mv $@.tmp $@

$(NODE_OUT)/%.js: agent/node/%.js
	@mkdir -p $(dir $@)
	cp $< $@

$(NODE_OUT)/package.json: agent/node/package.json
	@mkdir -p $(dir $@)
	cp $< $@

$(NODE_OUT)/README.md: agent/node/README.md
	@mkdir -p $(dir $@)
	cp $< $@

ifneq ($(wildcard $(NODE_HEADER)),)
all: node-agent
endif

# Installed where the hub looks for it: $(PREFIX)/lib/drover/node/index.js.
install-node: node-agent
	install -d $(DESTDIR)$(PREFIX)/lib/drover/node
	install -m 755 $(NODE_ADDON) $(DESTDIR)$(PREFIX)/lib/drover/node/drover_agent.node
	install -m 644 $(NODE_FILES) $(DESTDIR)$(PREFIX)/lib/drover/node/
