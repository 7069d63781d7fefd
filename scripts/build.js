#!/usr/bin/env node
// Builds the native addon from source.
//
//   node scripts/build.js               build now
//   node scripts/build.js --if-missing  the `install` script: build only if no addon is at hand
//   node scripts/build.js --if-stale    build only if a Rust source is newer than the binary
//
// An app that installs numballoc on a platform with a prebuilt package (an optional dependency,
// see lib/platform.js) needs no build and no Rust. Elsewhere the install builds from source if
// `cargo` is on the PATH. If it is not, or the build fails, the install still succeeds and says
// why in one line (which npm shows with --foreground-scripts, or when asked for the install's
// log), and require('numballoc') then throws ERR_NATIVE_ADDON_MISSING with the same words.
// (Failing the install would break every app that merely depends on something that depends on
// numballoc, on a platform where it was never going to be used.) NUMBALLOC_BUILD_FROM_SOURCE=1
// builds from source even where a package matched or a build exists, and then a failed build
// fails the install: for contributors, and for users who build everything themselves.
//
// In this repository the napi CLI (a devDependency) builds and regenerates binding.d.ts. In an app
// that installed the packed tarball the CLI is absent: `cargo build --release` builds the same
// cdylib, which is copied to the file name lib/native.js loads.
'use strict'

const { execFileSync, spawnSync } = require('node:child_process')
const os = require('node:os')
const fs = require('node:fs')
const path = require('node:path')
const { currentPlatform, binaryFile } = require('../lib/platform.js')

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

/** Why the addon cannot be loaded here (the loader's own error), or null if it can. */
function addonProblem() {
  try {
    require('../lib/native.js')
    return null
  } catch (error) {
    if (error.code !== 'ERR_NATIVE_ADDON_MISSING') throw error
    return error
  }
}

function onPath(command) {
  return (process.env.PATH ?? '').split(path.delimiter).some((dir) => dir && fs.existsSync(path.join(dir, command)))
}

/** Whether to build: `mode` is how the script was asked. */
function wanted(mode) {
  if (forced) return true
  if (mode === '--if-missing') return addonProblem() !== null
  if (!fs.existsSync(target)) return true
  if (mode === '--if-stale') {
    const built = fs.statSync(target).mtimeMs
    return !sources.every((entry) => newestSourceTime(entry) <= built)
  }
  return true
}

function run(command, args, env = process.env) {
  const result = spawnSync(command, args, { cwd: root, env, stdio: 'inherit' })
  if (result.error && result.error.code === 'ENOENT')
    throw new Error(`'${command}' was not found: building numballoc from source needs a Rust toolchain (https://rustup.rs)`)
  if (result.error) throw result.error
  if (result.status !== 0) throw new Error(`'${command} ${args.join(' ')}' failed`)
}

function napiCli() {
  const cli = path.join(root, 'node_modules', '.bin', 'napi')
  return fs.existsSync(cli) ? cli : null
}

/** Where cargo puts what it builds for this package. */
function cargoTargetDir(env = process.env) {
  if (env.CARGO_TARGET_DIR) return path.resolve(root, env.CARGO_TARGET_DIR)
  return JSON.parse(execFileSync('cargo', ['metadata', '--format-version', '1', '--no-deps'], { cwd: root, env })).target_directory
}

/**
 * Builds with plain cargo (an app's install: no napi CLI) into a scratch target directory, unless
 * the user named one, so that no 90 MB of build output stays in node_modules. The binary is
 * written beside and renamed into place: a process that has the old one loaded keeps it.
 */
function buildWithCargo() {
  const scratch = process.env.CARGO_TARGET_DIR ? null : fs.mkdtempSync(path.join(os.tmpdir(), 'numballoc-build-'))
  const env = scratch ? { ...process.env, CARGO_TARGET_DIR: scratch } : process.env
  try {
    run('cargo', ['build', '--release', '--locked', '--lib', '-p', 'numballoc-node'], env)
    const library = { darwin: 'libnumballoc.dylib', win32: 'numballoc.dll' }[process.platform] ?? 'libnumballoc.so'
    const temporary = `${target}.${process.pid}.tmp`
    fs.copyFileSync(path.join(cargoTargetDir(env), 'release', library), temporary)
    fs.renameSync(temporary, target)
  } finally {
    if (scratch) fs.rmSync(scratch, { recursive: true, force: true })
  }
}

function build() {
  const cli = napiCli()
  if (cli) run(cli, ['build', '--platform', '--release', '--no-js', '--dts', 'binding.d.ts'])
  else buildWithCargo()
}

function main(mode) {
  if (!wanted(mode)) return
  // An install without a prebuilt addon and without a working toolchain still succeeds (see above).
  const lenient = mode === '--if-missing' && !forced
  if (lenient && !onPath('cargo')) {
    console.error(addonProblem().message) // it starts with 'numballoc'
    return
  }
  try {
    build()
  } catch (error) {
    if (!lenient) throw error
    console.error(
      `numballoc: building the native addon from source failed (${error.message}); require('numballoc') will fail until it is built: "npm rebuild numballoc"`,
    )
  }
}

if (require.main === module) {
  try {
    main(process.argv[2])
  } catch (error) {
    console.error(`numballoc: ${error.message}`)
    process.exit(1)
  }
}

module.exports = { cargoTargetDir }
