'use strict'
// Packs numballoc for release: the main package, which lists a package per platform in
// `optionalDependencies` (npm installs only the one whose os, cpu and libc match), and those
// platform packages (npm/<platform>/, the napi-rs layout), each with its one binary. The
// repository's package.json lists no optional dependencies, so that `npm install` in a clone
// never fetches a binary from the registry: they are written into the packed copy only.
// Used by `npm run artifacts` and by the package tests.
const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')
const { binaryFile, packageOf, TARGETS } = require('../lib/platform.js')

const root = path.join(__dirname, '..')
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm'
const manifest = () => JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'))

/** Runs `npm pack` in `dir` into `dest`; returns the tarball's path and its files. */
function npmPack(dir, dest) {
  const [packed] = JSON.parse(execFileSync(npm, ['pack', '--json', '--pack-destination', dest], { cwd: dir, encoding: 'utf8' }))
  return { tarball: path.join(dest, packed.filename), files: packed.files.map((file) => file.path) }
}

/** Copies what `npm pack` would pack from `from` into a new directory under `dest`. */
function stage(from, dest, name) {
  const [listed] = JSON.parse(execFileSync(npm, ['pack', '--dry-run', '--json'], { cwd: from, encoding: 'utf8' }))
  const staged = fs.mkdtempSync(path.join(dest, `${name}-`))
  for (const { path: file } of listed.files) {
    fs.mkdirSync(path.dirname(path.join(staged, file)), { recursive: true })
    fs.copyFileSync(path.join(from, file), path.join(staged, file))
  }
  return staged
}

/** The main package as released: this repository's files, with an optional dependency per platform. */
function packMain(dest) {
  const { version } = manifest()
  const staged = stage(root, dest, 'numballoc')
  const json = path.join(staged, 'package.json')
  const pkg = JSON.parse(fs.readFileSync(json, 'utf8'))
  pkg.optionalDependencies = Object.fromEntries(TARGETS.map(({ platform }) => [packageOf(platform), version]))
  fs.writeFileSync(json, `${JSON.stringify(pkg, null, 2)}\n`)
  try {
    return npmPack(staged, dest)
  } finally {
    fs.rmSync(staged, { recursive: true, force: true })
  }
}

/** `platform`'s package (npm/<platform>/) with `binary` as its addon, at the main package's version. */
function packPlatform(platform, binary, dest) {
  const dir = path.join(root, 'npm', platform)
  if (!fs.existsSync(path.join(dir, 'package.json'))) throw new Error(`no package for ${platform} in npm/ (npx napi create-npm-dirs makes one)`)
  const staged = fs.mkdtempSync(path.join(dest, `${packageOf(platform)}-`))
  try {
    const pkg = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'))
    pkg.version = manifest().version
    fs.writeFileSync(path.join(staged, 'package.json'), `${JSON.stringify(pkg, null, 2)}\n`)
    for (const file of ['README.md']) fs.copyFileSync(path.join(dir, file), path.join(staged, file))
    fs.copyFileSync(path.join(root, 'LICENSE'), path.join(staged, 'LICENSE'))
    fs.copyFileSync(binary, path.join(staged, binaryFile(platform)))
    return npmPack(staged, dest)
  } finally {
    fs.rmSync(staged, { recursive: true, force: true })
  }
}

module.exports = { packMain, packPlatform }
