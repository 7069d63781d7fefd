'use strict'
// What a user gets: `npm pack`, then `npm install ./numballoc-*.tgz` in a new empty app builds the
// addon from source without the napi CLI (a devDependency), require('numballoc') allocates, and
// the numballoc command runs.
const test = require('node:test')
const assert = require('node:assert/strict')
const { execFileSync, spawnSync } = require('node:child_process')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')

const { packMain, packPlatform } = require('../scripts/pack.js')
const { currentPlatform, binaryFile, packageOf } = require('../lib/platform.js')

const root = path.join(__dirname, '..')
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm'

test('the packed tarball installs into an empty app, builds from source and allocates', { timeout: 600_000 }, (t) => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'numballoc-pack-'))
  t.after(() => fs.rmSync(work, { recursive: true, force: true }))
  const packed = JSON.parse(execFileSync(npm, ['pack', '--json', '--pack-destination', work], { cwd: root, encoding: 'utf8' }))
  const files = packed[0].files.map((f) => f.path)
  assert.ok(files.includes('index.js') && files.includes('crates/core/src/bitmap.rs'), 'sources are packed')
  assert.ok(!files.some((f) => f.endsWith('.node') || f.startsWith('target/')), 'no binary or build output is packed')
  // The README's links to files of the package work where it is installed.
  const linked = [...fs.readFileSync(path.join(root, 'README.md'), 'utf8').matchAll(/\]\(([^)#:]+)\)/g)].map((m) => m[1])
  assert.ok(linked.length > 0)
  for (const link of linked)
    assert.ok(
      files.some((f) => f === link || f.startsWith(link.endsWith('/') ? link : `${link}/`)),
      `${link} is packed`,
    )

  const app = path.join(work, 'app')
  fs.mkdirSync(app)
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'app', version: '1.0.0', private: true }))
  // As a user's install builds: in a scratch target directory of its own, removed afterwards.
  const env = { ...process.env }
  delete env.CARGO_TARGET_DIR
  execFileSync(npm, ['install', '--no-audit', '--no-fund', path.join(work, packed[0].filename)], { cwd: app, env, stdio: 'inherit' })
  assert.ok(!fs.existsSync(path.join(app, 'node_modules', '@napi-rs')), 'the napi CLI was not needed')
  const installed = fs.readdirSync(path.join(app, 'node_modules', 'numballoc'))
  assert.deepStrictEqual(
    installed.filter((f) => f === 'target' || f.startsWith('.build-') || f.endsWith('.tmp')),
    [],
    'no build output is left in the package',
  )
  assert.ok(installed.includes(binaryFile(currentPlatform())), 'the addon was built')

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

// What an app that installs a release gets: the main package and this platform's package (packed
// as `npm run artifacts` packs them), with no Rust anywhere on the PATH.

/** PATH without any directory that holds cargo, rustc or rustup, and a directory with node and npm. */
function pathWithoutRust(work) {
  const bin = path.join(work, 'bin')
  fs.mkdirSync(bin)
  fs.symlinkSync(process.execPath, path.join(bin, 'node'))
  const rust = ['cargo', 'rustc', 'rustup']
  const dirs = process.env.PATH.split(path.delimiter).filter((dir) => dir && !rust.some((tool) => fs.existsSync(path.join(dir, tool))))
  const found = dirs.find((dir) => fs.existsSync(path.join(dir, 'npm')))
  assert.ok(found, 'npm is on a PATH directory without Rust')
  return [bin, ...dirs].join(path.delimiter)
}

function newApp(work, name) {
  const app = path.join(work, name)
  fs.mkdirSync(app)
  fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name, version: '1.0.0', private: true }))
  return app
}

/** Allocates from require('numballoc') and from import in `app`, in a new process; returns what it printed. */
function allocateIn(app, env) {
  const name = `numballoc-test-prebuilt-${process.pid}`
  const script = `
    const { ConcurrentBitmap, destroyShared } = require('numballoc')
    import('numballoc').then((esm) => {
      const ids = esm.ConcurrentBitmap.open(${JSON.stringify(name)}, { capacity: 10 })
      const got = [ids.allocate(), ids.allocate()]
      ids.close()
      destroyShared(${JSON.stringify(name)})
      const addon = Object.keys(require.cache).find((file) => file.endsWith('.node'))
      console.log(JSON.stringify({ got, same: esm.ConcurrentBitmap === ConcurrentBitmap, addon }))
    })`
  return JSON.parse(execFileSync(process.execPath, ['-e', script], { cwd: app, env, encoding: 'utf8' }))
}

test(
  'a release installs with no Rust on the PATH: the platform package carries the addon, with and without install scripts; NUMBALLOC_BUILD_FROM_SOURCE=1 builds anyway',
  { timeout: 600_000 },
  (t) => {
    const work = fs.mkdtempSync(path.join(os.tmpdir(), 'numballoc-release-'))
    t.after(() => fs.rmSync(work, { recursive: true, force: true }))
    const platform = currentPlatform()
    const main = packMain(work)
    const binary = packPlatform(platform, path.join(root, binaryFile(platform)), work)
    assert.ok(!main.files.some((f) => f.endsWith('.node')), 'the main package has no binary')
    assert.deepEqual(binary.files.sort(), ['LICENSE', 'README.md', binaryFile(platform), 'package.json'])
    const env = { ...process.env, PATH: pathWithoutRust(work) }
    delete env.CARGO_TARGET_DIR

    for (const flags of [[], ['--ignore-scripts']]) {
      const app = newApp(work, `app${flags.length}`)
      // --offline: the other platforms' packages are looked for nowhere (npm skips optional ones it
      // cannot get), and nothing is fetched from the registry.
      execFileSync(npm, ['install', '--offline', '--no-audit', '--no-fund', ...flags, main.tarball, binary.tarball], { cwd: app, env, stdio: 'pipe' })
      const installed = path.join(app, 'node_modules', 'numballoc')
      assert.deepEqual(
        fs.readdirSync(installed).filter((f) => f.endsWith('.node')),
        [],
        'nothing was built',
      )
      assert.ok(fs.existsSync(path.join(app, 'node_modules', packageOf(platform), binaryFile(platform))))
      const { got, same, addon } = allocateIn(app, env)
      assert.equal(new Set(got).size, 2, `${flags}: two different numbers`)
      assert.ok(same, 'import and require give the same classes')
      assert.equal(addon, fs.realpathSync(path.join(app, 'node_modules', packageOf(platform), binaryFile(platform))))
    }

    // Asked to, the install builds from source even so, and the local build is the one loaded.
    const app = newApp(work, 'app-from-source')
    const build = { ...process.env, NUMBALLOC_BUILD_FROM_SOURCE: '1', CARGO_TARGET_DIR: path.join(root, 'target', 'pack-test') }
    execFileSync(npm, ['install', '--offline', '--no-audit', '--no-fund', main.tarball, binary.tarball], { cwd: app, env: build, stdio: 'pipe' })
    const { addon } = allocateIn(app, env)
    assert.equal(addon, fs.realpathSync(path.join(app, 'node_modules', 'numballoc', binaryFile(platform))))
  },
)

test('where no package matches and no Rust exists, the install succeeds with one line and require throws the numballoc message', { timeout: 300_000 }, (t) => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'numballoc-nopackage-'))
  t.after(() => fs.rmSync(work, { recursive: true, force: true }))
  const main = packMain(work)
  const env = { ...process.env, PATH: pathWithoutRust(work) }
  const app = newApp(work, 'app')
  const install = spawnSync(npm, ['install', '--offline', '--no-audit', '--no-fund', '--foreground-scripts', main.tarball], { cwd: app, env, encoding: 'utf8' })
  assert.equal(install.status, 0, install.stderr)
  const said = `${install.stdout}${install.stderr}`.split('\n').filter((line) => line.startsWith('numballoc'))
  assert.equal(said.length, 1, said.join('\n'))
  const missing = `numballoc has no native addon for ${currentPlatform()}: ${packageOf(currentPlatform())}, the optional dependency that carries it, is not installed`
  assert.ok(said[0].startsWith(missing), said[0])
  assert.ok(said[0].endsWith('No build from source was tried: cargo is not on the PATH.'), said[0])

  const required = spawnSync(process.execPath, ['-e', "require('numballoc')"], { cwd: app, env, encoding: 'utf8' })
  assert.equal(required.status, 1)
  assert.ok(required.stderr.includes(`Error: ${missing}`), required.stderr)
  assert.match(required.stderr, /code: 'ERR_NATIVE_ADDON_MISSING'/)
  assert.doesNotMatch(required.stderr, /napi|binding\.js|wasi|Require stack|cause/i, 'no loader internals')
  const cli = spawnSync(path.join(app, 'node_modules', '.bin', 'numballoc'), ['list'], { cwd: app, env, encoding: 'utf8' })
  assert.equal(cli.status, 1)
  assert.equal(cli.stderr.trim().split('\n').length, 1, cli.stderr)
  assert.ok(cli.stderr.startsWith(missing), cli.stderr)
  const help = spawnSync(path.join(app, 'node_modules', '.bin', 'numballoc'), ['--help'], { cwd: app, env, encoding: 'utf8' })
  assert.equal(help.status, 0, 'help needs no addon')
  assert.match(help.stdout, /Usage: numballoc COMMAND/)

  // A platform package whose addon is damaged inside (its headers intact) crashes whoever loads
  // it: the install script asks a process of its own, so the crash means "no addon", not a failed install.
  const damaged = path.join(app, 'node_modules', packageOf(currentPlatform()))
  fs.mkdirSync(damaged)
  fs.writeFileSync(path.join(damaged, 'package.json'), JSON.stringify({ name: packageOf(currentPlatform()), version: require('../package.json').version }))
  const bytes = fs.readFileSync(path.join(root, binaryFile(currentPlatform())))
  bytes.fill(0, bytes.length - 0x2000)
  fs.writeFileSync(path.join(damaged, binaryFile(currentPlatform())), bytes)
  const rebuilt = spawnSync(npm, ['rebuild', 'numballoc', '--foreground-scripts'], { cwd: app, env, encoding: 'utf8' })
  assert.equal(rebuilt.status, 0, rebuilt.stderr)
  assert.match(`${rebuilt.stdout}${rebuilt.stderr}`, /^numballoc's native addon for .* crashed the process that loaded it/m)
  fs.rmSync(damaged, { recursive: true })

  // A toolchain that does not work (here a cargo that fails) fails the build, not the install.
  const broken = path.join(work, 'broken')
  fs.mkdirSync(broken)
  fs.writeFileSync(path.join(broken, 'cargo'), '#!/bin/sh\necho "no default toolchain" >&2\nexit 1\n', { mode: 0o755 })
  const other = newApp(work, 'other')
  const withBroken = { ...env, PATH: `${broken}${path.delimiter}${env.PATH}` }
  const tried = spawnSync(npm, ['install', '--offline', '--no-audit', '--no-fund', '--foreground-scripts', main.tarball], {
    cwd: other,
    env: withBroken,
    encoding: 'utf8',
  })
  assert.equal(tried.status, 0, tried.stderr)
  assert.match(`${tried.stdout}${tried.stderr}`, /^numballoc: building the native addon from source failed \('cargo build .*' failed\)/m)
})
