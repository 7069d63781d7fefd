'use strict'
// The native addon: a build in the package's own directory first (a clone, or an install that
// built from source), then the package npm installs for this platform (`numballoc-linux-x64-gnu`,
// an optional dependency), or one coded error that says which platform was looked for and what
// to do about it.
const fs = require('node:fs')
const path = require('node:path')
const { currentPlatform, binaryFile, packageOf, TARGETS } = require('./platform.js')
const { version } = require('../package.json')

const root = path.join(__dirname, '..')

function load() {
  const platform = currentPlatform()
  const local = path.join(root, binaryFile(platform))
  if (fs.existsSync(local)) return loadFrom(local, platform)
  const packaged = resolvePackage(packageOf(platform))
  if (packaged) return loadFrom(packaged, platform)
  throw missing(platform)
}

/** Where `name` is installed, or null if it is not. */
function resolvePackage(name) {
  try {
    return require.resolve(name)
  } catch (error) {
    if (error.code === 'MODULE_NOT_FOUND') return null
    throw error
  }
}

function loadFrom(file, platform) {
  try {
    return require(file)
  } catch (cause) {
    // dlopen's own words say why (another architecture, a newer glibc than this system's, a
    // damaged file); the first line is the one that matters.
    const why = String(cause.message).split('\n')[0].replace(/\.$/, '')
    throw addonError(`numballoc's native addon for ${platform} (${file}) could not be loaded: ${why}. ${BUILD_FROM_SOURCE}`, cause)
  }
}

const BUILD_FROM_SOURCE =
  'To build it from source, install Rust (https://rustup.rs) and run "npm rebuild numballoc" in your app ("npm run build" in a clone of numballoc).'

function missing(platform) {
  const name = packageOf(platform)
  const published = TARGETS.some((target) => target.platform === platform)
  const why = published
    ? `its package ${name} is not installed. npm installs it with numballoc, except when a package-lock.json ` +
      `written on another platform leaves it out (npm/cli#4828): remove node_modules and package-lock.json and ` +
      `install again, or run "npm install ${name}@${version}".`
    : `no prebuilt package exists for ${platform}.`
  return addonError(`numballoc has no native addon for ${platform}: ${why} ${BUILD_FROM_SOURCE}`)
}

function addonError(message, cause) {
  const error = new Error(message, cause === undefined ? undefined : { cause })
  error.code = 'ERR_NATIVE_ADDON_MISSING'
  return error
}

module.exports = load()
