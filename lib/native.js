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

/** The largest package.json read: a real one is a few hundred bytes. */
const MANIFEST_LIMIT = 1 << 16

/**
 * The addon of `platform`'s package, if that package is installed; it must be this version's.
 * Found by walking the node_modules directories as Node's resolver would, but reading only a
 * regular file of a sane size: a package.json that is a FIFO or /dev/zero must not hang or fill
 * memory, and one that is a directory is damage, not absence.
 */
function findPackage(platform) {
  const name = packageOf(platform)
  const manifest = nodeModulesDirs(root)
    .map((dir) => path.join(dir, name, 'package.json'))
    .find((file) => fs.existsSync(path.dirname(file)))
  if (manifest === undefined) return null
  const damaged = (why, cause) =>
    addonError(`numballoc's native addon for ${platform} comes with a damaged ${manifest} (${why}): install numballoc again.`, cause)
  let text
  try {
    text = readRegularFile(manifest, MANIFEST_LIMIT)
  } catch (cause) {
    throw damaged(cause.message, cause)
  }
  let installed
  try {
    installed = JSON.parse(text.replace(/^\uFEFF/, '')).version
  } catch (cause) {
    throw damaged(cause.message, cause)
  }
  if (installed !== version) {
    const found = typeof installed === 'string' ? `${name} ${installed} is installed` : `the installed ${name} names no version`
    throw addonError(`numballoc ${version} needs ${name} ${version}, and ${found} (${path.dirname(manifest)}): install numballoc again.`)
  }
  return path.join(path.dirname(manifest), binaryFile(platform))
}

/** The node_modules directories Node looks in from `from`, nearest first. */
function nodeModulesDirs(from) {
  const dirs = []
  for (let dir = from; ; dir = path.dirname(dir)) {
    if (path.basename(dir) !== 'node_modules') dirs.push(path.join(dir, 'node_modules'))
    if (path.dirname(dir) === dir) return dirs
  }
}

/** The text of `file` if it is a regular file of at most `limit` bytes (opened without blocking on a FIFO). */
function readRegularFile(file, limit) {
  const fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK)
  try {
    const stat = fs.fstatSync(fd)
    if (!stat.isFile()) throw new Error('not a regular file')
    if (stat.size > limit) throw new Error(`${stat.size} bytes`)
    return fs.readFileSync(fd, 'utf8')
  } finally {
    fs.closeSync(fd)
  }
}

function loadFrom(file, platform) {
  const problem = fileProblem(file)
  if (problem) throw addonError(`numballoc's native addon for ${platform} (${file}) ${problem}: install numballoc again. ${BUILD_FROM_SOURCE}`)
  try {
    return require(file)
  } catch (cause) {
    if (cause.code === 'ERR_DLOPEN_DISABLED') {
      throw addonError(
        'numballoc needs its native addon, and this Node process may not load addons: drop --no-addons, or give the permission model --allow-addons.',
        cause,
      )
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
 * platform: Linux, FreeBSD), or null: not a regular file, not ELF, another architecture or byte
 * order, or cut shorter than its own tables and segments say. Damage inside a complete file is
 * not seen here (dlopen runs the file's code; only a checksum would catch it).
 */
function fileProblem(file) {
  let fd
  try {
    // O_NONBLOCK: a FIFO put there after a check must not block the open.
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK)
  } catch (error) {
    return `cannot be read (${error.code})`
  }
  try {
    const stat = fs.fstatSync(fd)
    if (!stat.isFile()) return 'is not a regular file'
    if (process.platform === 'darwin' || process.platform === 'win32') return null
    return elfProblem(fd, stat.size)
  } catch (error) {
    return `cannot be read (${error.code ?? error.message})`
  } finally {
    fs.closeSync(fd)
  }
}

function elfProblem(fd, size) {
  const header = Buffer.alloc(64)
  const read = fs.readSync(fd, header, 0, 64, 0)
  if (read < 52 || header.readUInt32BE(0) !== 0x7f454c46) return 'is not a shared library (no ELF header)'
  const wide = header[4] === 2
  const little = header[5] === 1
  if (header[4] !== 1 && !wide) return 'has a damaged ELF header'
  if (little !== (require('node:os').endianness() === 'LE')) return `is built for ${little ? 'little' : 'big'}-endian machines, and this one is not`
  const u16 = (buffer, offset) => (little ? buffer.readUInt16LE(offset) : buffer.readUInt16BE(offset))
  const u32 = (buffer, offset) => (little ? buffer.readUInt32LE(offset) : buffer.readUInt32BE(offset))
  const u64 = (buffer, offset) => Number(little ? buffer.readBigUInt64LE(offset) : buffer.readBigUInt64BE(offset))
  const address = wide ? u64 : u32
  const machine = u16(header, 18)
  const expected = MACHINES[process.arch]
  if (expected !== undefined && machine !== expected) {
    const built = Object.keys(MACHINES).find((arch) => MACHINES[arch] === machine) ?? `ELF machine ${machine}`
    return `is built for ${built}, and this process is ${process.arch}`
  }
  // ELF64 and ELF32 place the same fields at different offsets.
  const [phoff, shoff] = wide ? [address(header, 32), address(header, 40)] : [address(header, 28), address(header, 32)]
  const at = wide ? 54 : 42
  const [phentsize, phnum, shentsize, shnum] = [u16(header, at), u16(header, at + 2), u16(header, at + 4), u16(header, at + 6)]
  let end = Math.max(phoff + phentsize * phnum, shoff + shentsize * shnum)
  // Beyond 2^48 bytes no file is real: the header itself is damaged.
  if (!Number.isSafeInteger(end) || end > 2 ** 48) return 'has a damaged ELF header'
  const [entry, offset, filesz] = wide ? [56, 8, 32] : [32, 4, 16]
  if (end <= size && phentsize >= entry) {
    const table = Buffer.alloc(phentsize * phnum)
    fs.readSync(fd, table, 0, table.length, phoff)
    for (let i = 0; i < phnum; i++) end = Math.max(end, address(table, i * phentsize + offset) + address(table, i * phentsize + filesz))
    if (end > 2 ** 48) return 'has a damaged ELF header'
  }
  if (end > size) return `is cut short (${size} bytes, and its headers describe ${end})`
  return null
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
