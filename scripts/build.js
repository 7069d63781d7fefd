#!/usr/bin/env node
// Builds the native addon from source.
//
//   node scripts/build.js               build now
//   node scripts/build.js --if-missing  build only if no binary is present (the `install` script)
//   node scripts/build.js --if-stale    build only if a Rust source is newer than the binary
//
// In this repository the napi CLI (a devDependency) builds and regenerates binding.js and
// binding.d.ts. In an app that installed the packed tarball the CLI is absent: `cargo build
// --release` builds the same cdylib, which is copied to the file name binding.js loads.
'use strict'

const { execFileSync, spawnSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const root = path.join(__dirname, '..')
const target = path.join(root, `numballoc.${platformSuffix()}.node`)
const sources = ['Cargo.toml', 'Cargo.lock', 'build.rs', 'src', 'crates/core/Cargo.toml', 'crates/core/src']

/** The suffix binding.js looks for, e.g. `linux-x64-gnu`. */
function platformSuffix() {
  const { platform, arch } = process
  if (platform === 'linux') {
    const musl = !process.report?.getReport?.().header?.glibcVersionRuntime
    return `linux-${arch}-${musl ? 'musl' : 'gnu'}`
  }
  if (platform === 'win32') return `win32-${arch}-msvc`
  return `${platform}-${arch}`
}

function newestSourceTime(entry) {
  const full = path.join(root, entry)
  if (!fs.existsSync(full)) return 0
  const stat = fs.statSync(full)
  if (!stat.isDirectory()) return stat.mtimeMs
  return Math.max(0, ...fs.readdirSync(full).map((child) => newestSourceTime(path.join(entry, child))))
}

function upToDate(mode) {
  if (!fs.existsSync(target)) return false
  if (mode === '--if-missing') return true
  if (mode === '--if-stale') {
    const built = fs.statSync(target).mtimeMs
    return sources.every((entry) => newestSourceTime(entry) <= built)
  }
  return false
}

function run(command, args) {
  const result = spawnSync(command, args, { cwd: root, stdio: 'inherit' })
  if (result.error && result.error.code === 'ENOENT') {
    fail(`'${command}' was not found. Building numballoc from source needs a Rust toolchain: https://rustup.rs`)
  }
  if (result.status !== 0) fail(`'${command} ${args.join(' ')}' failed`)
}

function fail(message) {
  console.error(`numballoc: ${message}`)
  process.exit(1)
}

function napiCli() {
  try {
    return require.resolve('@napi-rs/cli/package.json', { paths: [root] }) && path.join(root, 'node_modules', '.bin', 'napi')
  } catch {
    return null
  }
}

function buildWithCargo() {
  run('cargo', ['build', '--release', '--lib', '-p', 'numballoc-node'])
  const targetDir = process.env.CARGO_TARGET_DIR
    ? path.resolve(root, process.env.CARGO_TARGET_DIR)
    : JSON.parse(execFileSync('cargo', ['metadata', '--format-version', '1', '--no-deps'], { cwd: root })).target_directory
  const library = { darwin: 'libnumballoc.dylib', win32: 'numballoc.dll' }[process.platform] ?? 'libnumballoc.so'
  fs.copyFileSync(path.join(targetDir, 'release', library), target)
}

const mode = process.argv[2]
if (!upToDate(mode)) {
  const cli = napiCli()
  if (cli && fs.existsSync(cli)) {
    run(cli, ['build', '--platform', '--release', '--js', 'binding.js', '--dts', 'binding.d.ts'])
  } else {
    buildWithCargo()
  }
}
