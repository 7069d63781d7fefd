'use strict'
// Platforms in napi-rs's naming (`linux-x64-gnu`): which one this process runs on, what its
// binary and its package are called, and which platforms have a package. The loader, the install
// script and `npm run artifacts` all learn them here; the targets themselves are listed once, in
// package.json's `napi.targets` (which the napi CLI reads too).
const fs = require('node:fs')
const { napi } = require('../package.json')

/** `process.arch` of a Rust target triple's CPU, where the two differ. */
const CPU = { x86_64: 'x64', aarch64: 'arm64', i686: 'ia32', armv7: 'arm', riscv64gc: 'riscv64', powerpc64le: 'ppc64', loongarch64: 'loong64' }

/** Whether this Linux process runs on musl rather than glibc (what npm's `libc` field calls them). */
function isMusl() {
  // ldd says whose it is, and reading it is cheap; where it says neither (or is absent), the
  // report's header names the glibc the process runs with (musl has none), at the cost of a
  // report (network details left out: they cost a DNS lookup).
  try {
    const ldd = fs.readFileSync('/usr/bin/ldd', 'latin1')
    if (ldd.includes('musl')) return true
    if (ldd.includes('GNU C Library') || ldd.includes('GLIBC')) return false
  } catch {
    // No ldd: ask the report.
  }
  const report = process.report
  const excluded = report.excludeNetwork
  report.excludeNetwork = true
  try {
    return !report.getReport().header.glibcVersionRuntime
  } finally {
    report.excludeNetwork = excluded
  }
}

/** This process's platform, for example `linux-x64-gnu`, `linux-arm64-musl` or `darwin-arm64`. */
function currentPlatform() {
  const { platform, arch } = process
  // 32-bit ARM's ABIs are named as in its triples (gnueabihf, musleabihf), as napi-rs names them.
  if (platform === 'linux') return `linux-${arch}-${isMusl() ? 'musl' : 'gnu'}${arch === 'arm' ? 'eabihf' : ''}`
  if (platform === 'win32') return `win32-${arch}-msvc`
  return `${platform}-${arch}`
}

/** The platform a Rust target triple builds for: `aarch64-unknown-linux-musl` is `linux-arm64-musl`. */
function platformOfTriple(triple) {
  const [cpu, , os, abi] = triple.split('-')
  const arch = CPU[cpu] ?? cpu
  if (os === 'linux') return `linux-${arch}-${abi}`
  if (os === 'darwin') return `darwin-${arch}`
  if (os === 'windows') return `win32-${arch}-${abi}`
  return `${os}-${arch}`
}

/** The file name of the addon built for `platform`: `numballoc.linux-x64-gnu.node`. */
function binaryFile(platform) {
  return `${napi.binaryName}.${platform}.node`
}

/** The npm package that carries `platform`'s addon: `numballoc-linux-x64-gnu`. */
function packageOf(platform) {
  return `${napi.binaryName}-${platform}`
}

/** The Rust target triples a package is published for, and their platforms. */
const TARGETS = napi.targets.map((triple) => ({ triple, platform: platformOfTriple(triple) }))

module.exports = { currentPlatform, binaryFile, packageOf, TARGETS }
