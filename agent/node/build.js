'use strict';
/*
 * build.js — builds drover_agent.node for `npm install` (the package's
 * install script), with gcc and the C sources of the drover checkout: no
 * node-gyp, no header download, no network.
 *
 *   node build.js                 compile ./drover_agent.node
 *   node build.js --copy-sources  copy the C sources into ./csrc (npm's
 *                                 prepack: a packed tarball builds on its own)
 *
 * Sources: ./csrc/{agent,proto} when present (a packed tarball), else the
 * checkout this directory belongs to (../../agent and ../../proto, as with
 * `npm install /path/to/drover/agent/node`, which links or copies it).
 *
 * Needs: a C compiler (CC, default gcc); Node's headers (node_api.h) from
 * DROVER_NODE_INCLUDE, beside the running node (<prefix>/include/node, as
 * official builds and nvm ship them) or /usr/include/node (Debian: nodejs or
 * libnode-dev); msgpack-c's header-only packer (msgpack.h, Debian:
 * libmsgpack-dev). The result depends on nothing but libc at run time.
 * Exits 1 with one line saying what is missing when it cannot build.
 */

const fs = require('fs');
const path = require('path');
const { execFileSync, spawnSync } = require('child_process');

const HERE = fs.realpathSync(__dirname);

/* Prints one line to stderr and exits 1. */
function fail(msg) {
  process.stderr.write(`drover-agent: ${msg}\n`);
  process.exit(1);
}

/* Returns the directory holding agent/ and proto/ sources, or fails. */
function sourceRoot() {
  for (const root of [path.join(HERE, 'csrc'), path.join(HERE, '..', '..')]) {
    if (fs.existsSync(path.join(root, 'agent', 'drover.h')) && fs.existsSync(path.join(root, 'proto', 'report.c'))) {
      return root;
    }
  }
  return fail(`cannot find the drover C sources (agent/, proto/) in ${path.join(HERE, 'csrc')} or ` +
              `${path.resolve(HERE, '..', '..')}: install from a drover checkout (npm install /path/to/drover/agent/node)`);
}

/* The agent's share of proto/: the report encoder and sd_notify text, not the
 * control protocol (proto/control.c, which needs jansson and is the hub's). */
const NOT_AGENT = new Set(['control.c', 'text.c']);

/* Returns the .c files of dir (sorted), less those the agent does not use. */
function cFiles(dir) {
  return fs.readdirSync(dir).filter((f) => f.endsWith('.c') && !NOT_AGENT.has(f)).sort()
    .map((f) => path.join(dir, f));
}

/* Returns the directory holding node_api.h, or fails. */
function nodeInclude() {
  const candidates = [
    process.env.DROVER_NODE_INCLUDE,
    path.join(path.dirname(process.execPath), '..', 'include', 'node'),
    '/usr/include/node',
    '/usr/local/include/node',
  ].filter(Boolean);
  for (const dir of candidates) {
    if (fs.existsSync(path.join(dir, 'node_api.h'))) return dir;
  }
  return fail(`node_api.h not found in ${candidates.join(', ')}: install Node's headers ` +
              `(Debian: apt-get install libnode-dev) or set DROVER_NODE_INCLUDE`);
}

/* Returns pkg-config's cflags for msgpack, or [] when pkg-config or the .pc file is missing. */
function msgpackCflags() {
  try {
    const out = execFileSync('pkg-config', ['--cflags', 'msgpack'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    return out.trim().split(/\s+/).filter(Boolean);
  } catch (_) {
    return [];
  }
}

/* Copies the C sources (agent/*.[ch], proto/*.[ch]) into ./csrc for a self-contained tarball. */
function copySources() {
  const root = path.join(HERE, '..', '..');
  for (const sub of ['agent', 'proto']) {
    const from = path.join(root, sub);
    const to = path.join(HERE, 'csrc', sub);
    if (!fs.existsSync(from)) fail(`no ${from}: --copy-sources runs inside a drover checkout`);
    fs.mkdirSync(to, { recursive: true });
    for (const f of fs.readdirSync(from)) {
      if (/\.[ch]$/.test(f)) fs.copyFileSync(path.join(from, f), path.join(to, f));
    }
  }
}

/* Compiles and links drover_agent.node beside this file (via a temporary name, then renamed). */
function build() {
  const root = sourceRoot();
  const cc = process.env.CC || 'gcc';
  const out = path.join(HERE, 'drover_agent.node');
  const tmp = `${out}.tmp${process.pid}`;
  const args = [
    '-std=c11', '-O2', '-Wall', '-D_GNU_SOURCE', '-DDROVER_VERSION="0.1.0"',
    '-fPIC', '-fvisibility=hidden', '-ffunction-sections', '-fdata-sections', '-pthread',
    `-I${root}`, `-I${path.join(root, 'agent')}`, `-I${path.join(root, 'proto')}`, `-I${nodeInclude()}`,
    ...msgpackCflags(),
    '-shared', '-Wl,--exclude-libs,ALL', '-Wl,--gc-sections',
    `-Wl,--version-script=${path.join(HERE, 'addon.map')}`,
    '-o', tmp,
    path.join(HERE, 'addon.c'), ...cFiles(path.join(root, 'agent')), ...cFiles(path.join(root, 'proto')),
  ];
  const r = spawnSync(cc, args, { stdio: ['ignore', 'inherit', 'pipe'], encoding: 'utf8' });
  if (r.error) fail(`cannot run ${cc} (${r.error.code}): install a C compiler (Debian: apt-get install gcc) or set CC`);
  if (r.status !== 0) {
    process.stderr.write(r.stderr);
    try { fs.unlinkSync(tmp); } catch (_) { /* not created */ }
    if (/msgpack\.h/.test(r.stderr)) fail('msgpack.h not found: install msgpack-c (Debian: apt-get install libmsgpack-dev)');
    fail(`${cc} failed (exit ${r.status}); see above`);
  }
  if (r.stderr) process.stderr.write(r.stderr);
  fs.renameSync(tmp, out);
  process.stdout.write(`drover-agent: built ${out}\n`);
}

if (process.argv.includes('--copy-sources')) copySources();
else build();
