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
const fs = require('node:fs')
const path = require('node:path')
const { currentPlatform, binaryFile } = require('../lib/platform.js')

const root = path.join(__dirname, '..')
const platform = currentPlatform()
const target = path.join(root, binaryFile(platform))
const sources = ['Cargo.toml', 'Cargo.lock', 'build.rs', 'src', 'crates/core/Cargo.toml', 'crates/core/src']
const forced = yes('NUMBALLOC_BUILD_FROM_SOURCE')

/** Whether the environment variable `name` says yes; a value that is neither yes nor no is an error. */
function yes(name) {
  const value = (process.env[name] ?? '').trim().toLowerCase()
  if (['1', 'true', 'yes', 'on'].includes(value)) return true
  if (['', '0', 'false', 'no', 'off'].includes(value)) return false
  console.error(`numballoc: ${name}=${process.env[name]} is neither yes (1, true, yes, on) nor no (0, false, no, off)`)
  process.exit(1)
}

function newestSourceTime(entry) {
  const full = path.join(root, entry)
  if (!fs.existsSync(full)) return 0
  const stat = fs.statSync(full)
  if (!stat.isDirectory()) return stat.mtimeMs
  return Math.max(0, ...fs.readdirSync(full).map((child) => newestSourceTime(path.join(entry, child))))
}

/**
 * Why the addon cannot be loaded here (the loader's own message), or null if it can. Asked of a
 * new process: a file damaged inside crashes whoever loads it, and that must mean "build", not
 * end the install. A process that may not load addons at all (--no-addons in NODE_OPTIONS)
 * cannot tell, and then nothing is built.
 */
function problem() {
  if (!('found' in problem)) problem.found = addonProblem()
  return problem.found
}

function addonProblem() {
  const script = `try { require(${JSON.stringify(path.join(root, 'lib', 'native.js'))}); console.log('null') } catch (e) {
    console.log(JSON.stringify({ code: e.code, cause: e.cause && e.cause.code, message: e.message })) }`
  const child = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 60_000 })
  let verdict = null
  try {
    verdict = JSON.parse(child.stdout)
  } catch {
    return `numballoc's native addon for ${platform} crashed the process that loaded it (${child.signal ?? `exit ${child.status}`})`
  }
  if (verdict === null || verdict.cause === 'ERR_DLOPEN_DISABLED') return null
  if (verdict.code !== 'ERR_NATIVE_ADDON_MISSING') return `loading numballoc failed: ${verdict.message}`
  return verdict.message
}

function onPath(command) {
  return (process.env.PATH ?? '').split(path.delimiter).some((dir) => dir && fs.existsSync(path.join(dir, command)))
}

/** Whether to build: `mode` is how the script was asked. */
function wanted(mode) {
  if (forced) return true
  if (mode === '--if-missing') return problem() !== null
  if (!fs.existsSync(target)) return true
  if (mode === '--if-stale') {
    const built = fs.statSync(target).mtimeMs
    return !sources.every((entry) => newestSourceTime(entry) <= built)
  }
  return true
}

/** The build was interrupted (a signal): that fails the install however lenient it is. */
class Interrupted extends Error {}

function run(command, args, env = process.env, options = {}) {
  const result = spawnSync(command, args, { cwd: root, env, stdio: 'inherit', ...options })
  if (result.error && result.error.code === 'ENOENT')
    throw new Error(`'${command}' was not found: building numballoc from source needs a Rust toolchain (https://rustup.rs)`)
  if (result.error) throw result.error
  if (result.signal) throw new Interrupted(`'${command}' was stopped by ${result.signal}`)
  if (result.status !== 0) throw new Error(`'${command} ${args.join(' ')}' failed`)
  return result
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
 * Builds with plain cargo (an app's install: no napi CLI) into a scratch target directory inside
 * the package, unless the user named one, so that no 90 MB of build output stays in node_modules
 * (inside, not in TMPDIR: cargo runs build scripts from it, and /tmp is often noexec or small).
 * The binary is written beside and renamed into place: a process that has the old one loaded
 * keeps it. A signal stops cargo (same process group) and then this, after the cleanup.
 */
function buildWithCargo() {
  const scratch = process.env.CARGO_TARGET_DIR ? null : fs.mkdtempSync(path.join(root, '.build-'))
  const env = scratch ? { ...process.env, CARGO_TARGET_DIR: scratch } : process.env
  const temporary = `${target}.${process.pid}.tmp`
  const ignore = () => {}
  const signals = ['SIGINT', 'SIGTERM', 'SIGHUP']
  for (const signal of signals) process.on(signal, ignore)
  try {
    // The library's path as cargo reports it (a [build] target in a config moves it).
    const result = run('cargo', ['build', '--release', '--locked', '--lib', '-p', 'numballoc-node', '--message-format=json-render-diagnostics'], env, {
      stdio: ['ignore', 'pipe', 'inherit'],
      encoding: 'utf8',
      maxBuffer: 1 << 28,
    })
    const library = result.stdout
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line))
      .filter((message) => message.reason === 'compiler-artifact' && message.target.name === 'numballoc')
      .flatMap((message) => message.filenames)
      .find((file) => /\.(so|dylib|dll)$/.test(file))
    if (!library) throw new Error('cargo built no numballoc library')
    fs.copyFileSync(library, temporary)
    fs.renameSync(temporary, target)
  } finally {
    fs.rmSync(temporary, { force: true })
    if (scratch) fs.rmSync(scratch, { recursive: true, force: true })
    for (const signal of signals) process.off(signal, ignore)
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
    // It starts with 'numballoc'; what it blames (a package npm left out) is only half the story.
    console.error(`${problem()} No build from source was tried: cargo is not on the PATH.`)
    return
  }
  try {
    build()
  } catch (error) {
    if (!lenient || error instanceof Interrupted) throw error
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
