'use strict'
// index.d.ts against the TypeScript compiler: a typed consumer compiles under --strict, and every
// misuse marked in types/misuse.ts is rejected, on exactly the marked lines.
const test = require('node:test')
const assert = require('node:assert/strict')
const { spawnSync } = require('node:child_process')
const fs = require('node:fs')
const path = require('node:path')

const root = path.join(__dirname, '..')
const tsc = require.resolve('typescript/bin/tsc', { paths: [root] })
const compilerFlags = ['--noEmit', '--strict', '--target', 'ES2022', '--lib', 'ES2022,ESNext.Disposable', '--module', 'commonjs', '--types', 'node']

function compile(file) {
  const result = spawnSync(process.execPath, [tsc, ...compilerFlags, path.join(__dirname, 'types', file)], { cwd: root, encoding: 'utf8' })
  return { status: result.status, output: result.stdout + result.stderr }
}

test('a typed consumer compiles with tsc --noEmit --strict', () => {
  const { status, output } = compile('consumer.ts')
  assert.equal(status, 0, output)
})

test('misuses (wrong argument types, writing max, ignoring null from tryAllocate) are rejected', () => {
  const source = fs.readFileSync(path.join(__dirname, 'types', 'misuse.ts'), 'utf8').split('\n')
  const marked = source.flatMap((line, i) => (/\/\/ rejected$/.test(line) ? [i + 1] : []))
  assert.ok(marked.length >= 15)
  const { status, output } = compile('misuse.ts')
  assert.notEqual(status, 0)
  const errorLines = [...output.matchAll(/misuse\.ts\((\d+),\d+\): error/g)].map((m) => Number(m[1]))
  assert.deepEqual(
    [...new Set(errorLines)].sort((a, b) => a - b),
    marked,
    output,
  )
})
