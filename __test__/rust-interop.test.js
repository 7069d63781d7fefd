'use strict'
// A plain Rust program (crates/core/examples/take.rs) and this Node process share one region.
const test = require('node:test')
const assert = require('node:assert/strict')
const { execFileSync, spawn } = require('node:child_process')
const path = require('node:path')
const readline = require('node:readline')
const { ConcurrentBitmap } = require('..')
const { scratchName } = require('./helpers')

const root = path.join(__dirname, '..')

test('a Rust process and a Node process take numbers from one region: never the same one', async (t) => {
  execFileSync('cargo', ['build', '--quiet', '-p', 'numballoc-core', '--example', 'take'], { cwd: root, stdio: 'inherit' })
  const targetDir = JSON.parse(execFileSync('cargo', ['metadata', '--format-version', '1', '--no-deps'], { cwd: root })).target_directory
  const name = scratchName(t, 'rust')
  const size = 1024 // 8192 numbers
  const bitmap = ConcurrentBitmap.open(name, { capacity: size * 8 })
  t.after(() => bitmap.close())

  const rust = spawn(path.join(targetDir, 'debug', 'examples', 'take'), [name, size, (size * 8) / 2], { stdio: ['pipe', 'pipe', 'inherit'] })
  const lines = readline.createInterface({ input: rust.stdout })
  const rustNumbers = []
  const exited = new Promise((resolve) => rust.on('exit', resolve))
  const ready = new Promise((resolve) => lines.once('line', resolve))
  assert.equal(await ready, 'ready')
  // The numbers, one a line, then an empty line.
  const printed = new Promise((resolve) => lines.on('line', (line) => (line ? rustNumbers.push(Number(line)) : resolve())))
  rust.stdin.write('go\n')
  const nodeNumbers = []
  // Each side takes exactly half: whatever the interleaving, both counts and the union are fixed.
  for (let i = 0; i < (size * 8) / 2; i++) nodeNumbers.push(bitmap.allocate())
  await printed
  assert.equal(bitmap.count(), size * 8, 'both hold their halves')
  rust.stdin.end()
  assert.equal(await exited, 0)

  const all = [...nodeNumbers, ...rustNumbers].sort((a, b) => a - b)
  assert.deepEqual(
    all,
    Array.from({ length: size * 8 }, (_, i) => i),
    'every number exactly once between the two',
  )
  assert.equal(rustNumbers.length, (size * 8) / 2)
  assert.equal(bitmap.count(), (size * 8) / 2, 'the Rust program ended normally and gave its numbers back')
  for (const n of nodeNumbers.slice(0, 100)) assert.equal(bitmap.isAllocated(n), true)
})
