#!/usr/bin/env node
// Builds the native addon from source.
//
//   node scripts/build.js               build now
//   node scripts/build.js --if-missing  the `install` script: build only if no addon is at hand
//   node scripts/build.js --if-stale    build only if a Rust source is newer than the binary
//
// An app that installs numballoc on a platform with a prebuilt package (an optional dependency,
// see lib/platform.js) needs no build and no Rust. Elsewhere the install builds from source if
// `cargo` is on the PATH; if it is not, the install still succeeds and says so in one line, and
// require('numballoc') then throws ERR_NATIVE_ADDON_MISSING with what to do. (Failing the install
// would break every app that merely depends on something that depends on numballoc, on a
// platform where it was never going to be used.) NUMBALLOC_BUILD_FROM_SOURCE=1 builds from source
// even where a package matched: for contributors, and for users who build everything themselves.
//
// In this repository the napi CLI (a devDependency) builds and regenerates binding.d.ts. In an app
// that installed the packed tarball the CLI is absent: `cargo build --release` builds the same
// cdylib, which is copied to the file name lib/native.js loads.
'use strict'

const { execFileSync, spawnSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')
const { currentPlatform, binaryFile, packageOf } = require('../lib/platform.js')

const root = path.join(__dirname, '..')
const platform = currentPlatform()
const target = path.join(root, binaryFile(platform))
const sources = ['Cargo.toml', 'Cargo.lock', 'build.rs', 'src', 'crates/core/Cargo.toml', 'crates/core/src']
const forced = ['1', 'true'].includes(process.env.NUMBALLOC_BUILD_FROM_SOURCE ?? '')

function newestSourceTime(entry) {
  const full = path.join(root, entry)
  if (!fs.existsSync(full)) return 0
  const stat = fs.statSync(full)
  if (!stat.isDirectory()) return stat.mtimeMs
  return Math.max(0, ...fs.readdirSync(full).map((child) => newestSourceTime(path.join(entry, child))))
}

/** Whether this platform's package is installed and its addon loads here. */
function packageLoads() {
  try {
    require(require.resolve(packageOf(platform), { paths: [root] }))
    return true
  } catch {
    return false
  }
}

function onPath(command) {
  return (process.env.PATH ?? '').split(path.delimiter).some((dir) => dir && fs.existsSync(path.join(dir, command)))
}

function upToDate(mode) {
  if (mode === '--if-missing') {
    if (fs.existsSync(target)) return true
    if (forced) return false
    if (packageLoads()) return true
    if (!onPath('cargo')) {
      console.error(
        `numballoc: no prebuilt addon for ${platform} and no Rust toolchain to build one; require('numballoc') will fail until you install Rust (https://rustup.rs) and run "npm rebuild numballoc"`,
      )
      process.exit(0)
    }
    return false
  }
  if (!fs.existsSync(target)) return false
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
    run(cli, ['build', '--platform', '--release', '--no-js', '--dts', 'binding.d.ts'])
  } else {
    buildWithCargo()
  }
}
