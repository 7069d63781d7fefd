'use strict'
// The native addon: a build in the package's own directory first (a clone, or an install that
// built from source), then the package npm installs for this platform (`numballoc-linux-x64-gnu`,
// an optional dependency), or one coded error that says which platform was looked for, what was
// wrong and what to do. A file is looked at before it is loaded: dlopen of a file cut short dies
// of SIGBUS, of a FIFO waits forever, and of another architecture's library says "No such file".
const fs = require('node:fs')
const path = require('node:path')
const { currentPlatform, binaryFile, packageOf, TARGETS } = require('./platform.js')
const { version } = require('../package.json')

const root = path.join(__dirname, '..')

const BUILD_FROM_SOURCE =
  'To build it from source, install Rust (https://rustup.rs) and run "npm rebuild numballoc" in your app ("npm run build" in a clone of numballoc).'

function load() {
  const platform = currentPlatform()
  const local = path.join(root, binaryFile(platform))
  if (fs.existsSync(local)) return loadFrom(local, platform)
  const packaged = findPackage(platform)
  if (packaged) return loadFrom(packaged, platform)
  throw missing(platform)
}

/** The addon of `platform`'s package, if that package is installed; it must be this version's. */
function findPackage(platform) {
  const name = packageOf(platform)
  let manifest
  try {
    manifest = require.resolve(`${name}/package.json`, { paths: [root] })
  } catch (error) {
    if (error.code === 'MODULE_NOT_FOUND') return null
    throw addonError(`numballoc's native addon for ${platform} cannot be found: ${error.message}. ${BUILD_FROM_SOURCE}`, error)
  }
  let installed
  try {
    installed = JSON.parse(fs.readFileSync(manifest, 'utf8')).version
  } catch (cause) {
    throw addonError(`numballoc's native addon for ${platform} comes with a damaged ${manifest} (${cause.message}): install numballoc again.`, cause)
  }
  if (installed !== version) {
    throw addonError(
      `numballoc ${version} needs ${name} ${version}, and ${name} ${installed} is installed (${path.dirname(manifest)}): install numballoc again.`,
    )
  }
  return path.join(path.dirname(manifest), binaryFile(platform))
}

function loadFrom(file, platform) {
  const problem = fileProblem(file)
  if (problem) throw addonError(`numballoc's native addon for ${platform} (${file}) ${problem}: install numballoc again. ${BUILD_FROM_SOURCE}`)
  try {
    return require(file)
  } catch (cause) {
    if (cause.code === 'ERR_DLOPEN_DISABLED') {
      throw addonError('numballoc needs its native addon, and this Node process may not load addons (--no-addons, or the permission model).', cause)
    }
    // dlopen's own words, whose first line is the one that matters (a glibc older than the one
    // the addon was built for, a missing library).
    const why = String(cause.message).split('\n')[0].replace(/\.$/, '')
    throw addonError(`numballoc's native addon for ${platform} (${file}) could not be loaded: ${why}. ${BUILD_FROM_SOURCE}`, cause)
  }
}

/** ELF machine numbers of the architectures Node runs on, by `process.arch`. */
const MACHINES = { ia32: 3, ppc64: 21, s390x: 22, arm: 40, x64: 62, arm64: 183, riscv64: 243, loong64: 258 }

/**
 * What is wrong with `file` as this process's addon, as far as its ELF header tells (an ELF
 * platform: Linux, FreeBSD), or null: not a regular file, not ELF, another architecture, or cut
 * shorter than its own tables and segments say.
 */
function fileProblem(file) {
  let stat
  try {
    stat = fs.statSync(file)
  } catch (error) {
    return `cannot be read (${error.code})`
  }
  if (!stat.isFile()) return 'is not a regular file'
  if (process.platform === 'darwin' || process.platform === 'win32') return null
  const header = Buffer.alloc(64)
  let fd
  try {
    fd = fs.openSync(file, 'r')
    const read = fs.readSync(fd, header, 0, 64, 0)
    if (read < 64 || header.readUInt32BE(0) !== 0x7f454c46) return 'is not a shared library (no ELF header)'
    const little = header[5] === 1
    const u16 = (offset) => (little ? header.readUInt16LE(offset) : header.readUInt16BE(offset))
    const machine = u16(18)
    const expected = MACHINES[process.arch]
    if (expected !== undefined && machine !== expected) {
      const built = Object.keys(MACHINES).find((arch) => MACHINES[arch] === machine) ?? `ELF machine ${machine}`
      return `is built for ${built}, and this process is ${process.arch}`
    }
    if (header[4] !== 2) return null // 32-bit: the loader's own checks
    const u64 = (buffer, offset) => Number(little ? buffer.readBigUInt64LE(offset) : buffer.readBigUInt64BE(offset))
    const [phoff, shoff] = [u64(header, 32), u64(header, 40)]
    const [phentsize, phnum, shentsize, shnum] = [u16(54), u16(56), u16(58), u16(60)]
    let end = Math.max(phoff + phentsize * phnum, shoff + shentsize * shnum)
    if (end <= stat.size && phentsize >= 56) {
      const table = Buffer.alloc(phentsize * phnum)
      fs.readSync(fd, table, 0, table.length, phoff)
      for (let i = 0; i < phnum; i++) end = Math.max(end, u64(table, i * phentsize + 8) + u64(table, i * phentsize + 32))
    }
    if (end > stat.size) return `is cut short (${stat.size} bytes, and its headers describe ${end})`
    return null
  } catch (error) {
    return `cannot be read (${error.code ?? error.message})`
  } finally {
    if (fd !== undefined) fs.closeSync(fd)
  }
}

function missing(platform) {
  const name = packageOf(platform)
  if (!TARGETS.some((target) => target.platform === platform)) {
    return addonError(`numballoc has no native addon for ${platform}: no prebuilt package exists for it. ${BUILD_FROM_SOURCE}`)
  }
  return addonError(
    `numballoc has no native addon for ${platform}: ${name}, the optional dependency that carries it, is not installed. ` +
      'npm leaves optional dependencies out when told to (--omit=optional), when it cannot fetch them (--offline, a registry error), ' +
      `and with some lockfiles written on another platform (npm/cli#4828): install numballoc again without those. ${BUILD_FROM_SOURCE}`,
  )
}

function addonError(message, cause) {
  const error = new Error(message, cause === undefined ? undefined : { cause })
  error.code = 'ERR_NATIVE_ADDON_MISSING'
  return error
}

module.exports = load()
