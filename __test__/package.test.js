'use strict'
// What a user gets: `npm pack`, then `npm install ./numballoc-*.tgz` in a new empty app builds the
// addon from source without the napi CLI (a devDependency), require('numballoc') allocates, and
// the numballoc command runs.
const test = require('node:test')
const assert = require('node:assert/strict')
const { execFileSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const root = path.join(__dirname, '..')
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm'

test('the packed tarball installs into an empty app, builds from source and allocates', { timeout: 600_000 }, (t) => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'numballoc-pack-'))
  t.after(() => fs.rmSync(work, { recursive: true, force: true }))
  const packed = JSON.parse(execFileSync(npm, ['pack', '--json', '--pack-destination', work], { cwd: root, encoding: 'utf8' }))
  const files = packed[0].files.map((f) => f.path)
  assert.ok(files.includes('index.js') && files.includes('crates/core/src/bitmap.rs'), 'sources are packed')
  assert.ok(!files.some((f) => f.endsWith('.node') || f.startsWith('target/')), 'no binary or build output is packed')

  const app = path.join(work, 'app')
  fs.mkdirSync(app)
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }))
  // Share this repository's cargo target directory so dependencies are not compiled again.
  const env = { ...process.env, CARGO_TARGET_DIR: path.join(root, 'target', 'pack-test') }
  execFileSync(npm, ['install', '--no-audit', '--no-fund', path.join(work, packed[0].filename)], { cwd: app, env, stdio: 'inherit' })
  assert.ok(!fs.existsSync(path.join(app, 'node_modules', '@napi-rs')), 'the napi CLI was not needed')

  const name = `numballoc-test-pack-${process.pid}`
  const script = `
    const { ConcurrentBitmap, destroyShared } = require('numballoc')
    const ids = ConcurrentBitmap.open(${JSON.stringify(name)}, { capacity: 10 })
    const got = [ids.allocate(), ids.allocate()]
    ids.close()
    destroyShared(${JSON.stringify(name)})
    console.log(JSON.stringify(got))`
  const got = JSON.parse(execFileSync(process.execPath, ['-e', script], { cwd: app, encoding: 'utf8' }))
  assert.equal(got.length, 2)
  assert.notEqual(got[0], got[1])

  // The command is installed as a bin.
  const help = execFileSync(path.join(app, 'node_modules', '.bin', 'numballoc'), ['--help'], { encoding: 'utf8' })
  assert.match(help, /Usage: numballoc COMMAND/)
})
