'use strict'
// numballoc from ES modules and TypeScript `nodenext`, as the package name resolves for a user
// (through package.json "exports"; a package may import itself by its own name).
const test = require('node:test')
const assert = require('node:assert/strict')
const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')
const { scratchName } = require('./helpers')

const root = path.join(__dirname, '..')

test('every export imports by name from ESM, and is the very object require() gives', async (t) => {
  const cjs = require('numballoc')
  const esm = await import('numballoc')
  const names = Object.keys(cjs).sort()
  assert.deepEqual(
    Object.keys(esm)
      .filter((k) => k !== 'default')
      .sort(),
    names,
  )
  for (const name of names) assert.equal(esm[name], cjs[name], name)
  assert.equal(esm.default, cjs)
  const out = execFileSync(process.execPath, [path.join(__dirname, 'fixtures', 'esm-consumer.mjs'), scratchName(t, 'esm')], { encoding: 'utf8' })
  const report = JSON.parse(out)
  assert.deepEqual(report.names, names, "each static named import is defined and is require()'s")
  assert.deepEqual([report.leased, report.isLease, report.sameRegion], [0, true, true])
})

test('the package boundary: lib/ and the binding are private; package.json is not', () => {
  assert.throws(() => require('numballoc/lib/regions.js'), { code: 'ERR_PACKAGE_PATH_NOT_EXPORTED' })
  assert.throws(() => require('numballoc/lib/native.js'), { code: 'ERR_PACKAGE_PATH_NOT_EXPORTED' })
  assert.equal(require('numballoc/package.json').name, 'numballoc')
})

test('a TypeScript consumer under --module nodenext compiles and runs', (t) => {
  const outDir = path.join(root, 'target', 'ts-nodenext') // inside the package: 'numballoc' resolves to itself
  fs.rmSync(outDir, { recursive: true, force: true })
  const tsc = require.resolve('typescript/bin/tsc', { paths: [root] })
  execFileSync(
    process.execPath,
    [
      tsc,
      '--module',
      'nodenext',
      '--moduleResolution',
      'nodenext',
      '--target',
      'ES2022',
      '--strict',
      '--types',
      'node',
      '--rootDir',
      path.join(__dirname, 'types'),
      '--outDir',
      outDir,
      path.join(__dirname, 'types', 'nodenext.mts'),
    ],
    { cwd: root, encoding: 'utf8' },
  )
  // getPort() over a scratch pool, not this user's own.
  const env = { ...process.env, NUMBALLOC_PORT_POOL: scratchName(t, 'nodenext-ports') }
  const out = execFileSync(process.execPath, [path.join(outDir, 'nodenext.mjs'), scratchName(t, 'nodenext')], { encoding: 'utf8', env })
  assert.deepEqual(JSON.parse(out), { first: 0, port: true, sameModule: true, destroyed: true })
})
