'use strict'
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const path = require('node:path')
const { execFileSync, spawnSync } = require('node:child_process')
const { loadShared, destroyShared, listShared, inspectShared, reclaimShared, ConcurrentBitmap, MAX_SIZE } = require('..')
const { scratchName, forkFixture, waitFor, collect } = require('./helpers')

const notNumbers = ['1', null, undefined, {}, [], 1n, true, Symbol('n'), () => 1]
const badIntegers = [1.5, NaN, Infinity, -Infinity]

/** Asserts `fn` throws `Class` with `code` (and so the process is still alive afterwards). */
function throwsCode(fn, Class, code, label) {
  assert.throws(fn, (e) => {
    assert.ok(e instanceof Class, `${label}: ${e} is not a ${Class.name}`)
    assert.equal(e.code, code, `${label}: ${e.message}`)
    return true
  })
}

test('bad arguments to free and isAllocated: typed errors, nothing changes', (t) => {
  const bitmap = ConcurrentBitmap.open(scratchName(t, 'badfree'), { capacity: 100 })
  t.after(() => bitmap.close())
  const held = bitmap.allocate()
  for (const method of ['free', 'isAllocated']) {
    for (const bad of notNumbers) throwsCode(() => bitmap[method](bad), TypeError, 'ERR_INVALID_ARG_TYPE', `${method}(${typeof bad})`)
    for (const bad of [...badIntegers, -1, 100, 2 ** 53, -0.5]) throwsCode(() => bitmap[method](bad), RangeError, 'ERR_OUT_OF_RANGE', `${method}(${bad})`)
  }
  throwsCode(() => bitmap.free(), TypeError, 'ERR_INVALID_ARG_TYPE', 'free()')
  assert.equal(bitmap.count(), 1)
  assert.ok(bitmap.isAllocated(held))
})

test('double free is ERR_NOT_ALLOCATED and changes nothing', (t) => {
  const bitmap = ConcurrentBitmap.open(scratchName(t, 'double'), { capacity: 64 })
  t.after(() => bitmap.close())
  const n = bitmap.allocate()
  bitmap.free(n)
  throwsCode(() => bitmap.free(n), Error, 'ERR_NOT_ALLOCATED', 'second free')
  throwsCode(() => bitmap.free(63 - n), Error, 'ERR_NOT_ALLOCATED', 'never allocated')
  assert.equal(bitmap.count(), 0)
})

test('bad names: ERR_INVALID_NAME, or a TypeError for non-strings', (t) => {
  for (const name of ['', '.', '..', 'a/b', '/abs', 'sp ace', 'nul\0x', 'x'.repeat(256), 'é', 'tab\t']) {
    throwsCode(() => loadShared(name, 8), Error, 'ERR_INVALID_NAME', JSON.stringify(name))
    throwsCode(() => destroyShared(name), Error, 'ERR_INVALID_NAME', JSON.stringify(name))
  }
  for (const name of [1, null, undefined, {}, Symbol('x'), 1n]) {
    throwsCode(() => loadShared(name, 8), TypeError, 'ERR_INVALID_ARG_TYPE', String(typeof name))
    throwsCode(() => destroyShared(name), TypeError, 'ERR_INVALID_ARG_TYPE', String(typeof name))
    throwsCode(() => ConcurrentBitmap.open(name, { capacity: 8 }), TypeError, 'ERR_INVALID_ARG_TYPE', String(typeof name))
  }
  // The longest allowed name works.
  const longest = scratchName(t, 'x').padEnd(255, 'x')
  t.after(() => destroyShared(longest))
  loadShared(longest, 1).close()
})

test('bad sizes, capacities, max and options', (t) => {
  const name = scratchName(t, 'badsize')
  for (const bad of notNumbers.filter((v) => v !== undefined)) {
    throwsCode(() => loadShared(name, bad), TypeError, 'ERR_INVALID_ARG_TYPE', `size ${typeof bad}`)
    throwsCode(() => ConcurrentBitmap.open(name, { capacity: bad }), TypeError, 'ERR_INVALID_ARG_TYPE', `capacity ${typeof bad}`)
  }
  for (const bad of [...badIntegers, 0, -1, MAX_SIZE + 1]) {
    throwsCode(() => loadShared(name, bad), RangeError, 'ERR_OUT_OF_RANGE', `size ${bad}`)
  }
  for (const bad of [...badIntegers, 0, -1, MAX_SIZE * 8 + 1]) {
    throwsCode(() => ConcurrentBitmap.open(name, { capacity: bad }), RangeError, 'ERR_OUT_OF_RANGE', `capacity ${bad}`)
  }
  // No size or capacity opens an existing region, and never creates one.
  throwsCode(() => loadShared(name), Error, 'ENOENT', 'no size, no region')
  throwsCode(() => ConcurrentBitmap.open(name), Error, 'ENOENT', 'no options, no region')
  throwsCode(() => ConcurrentBitmap.open(name, {}), Error, 'ENOENT', 'no capacity, no region')
  assert.ok(!listShared().includes(name), 'nothing was created')
  for (const tag of [5, '5', null]) throwsCode(() => loadShared(name, 8, { tag }), TypeError, 'ERR_INVALID_ARG_TYPE', `tag ${tag}`)
  for (const tag of [-1n, 1n << 64n]) throwsCode(() => loadShared(name, 8, { tag }), RangeError, 'ERR_OUT_OF_RANGE', `tag ${tag}`)
  for (const options of [null, 5, 'x']) throwsCode(() => loadShared(name, 8, options), TypeError, 'ERR_INVALID_ARG_TYPE', `options ${options}`)
  throwsCode(() => loadShared(name, 8, { create: 'yes' }), TypeError, 'ERR_INVALID_ARG_TYPE', 'create')
  throwsCode(() => loadShared(name, 8, { mode: '600' }), TypeError, 'ERR_INVALID_ARG_TYPE', 'mode type')
  throwsCode(() => loadShared(name, 8, { mode: 0o10000 }), RangeError, 'ERR_OUT_OF_RANGE', 'mode range')
  throwsCode(() => loadShared(name, 8, { directory: 5 }), TypeError, 'ERR_INVALID_ARG_TYPE', 'directory')
  const mem = loadShared(name, 8)
  t.after(() => mem.close())
  for (const bad of [...notNumbers.filter((v) => v !== undefined)]) {
    throwsCode(() => new ConcurrentBitmap(mem, bad), TypeError, 'ERR_INVALID_ARG_TYPE', `max ${typeof bad}`)
  }
  for (const bad of [...badIntegers, -1]) throwsCode(() => new ConcurrentBitmap(mem, bad), RangeError, 'ERR_OUT_OF_RANGE', `max ${bad}`)
  for (const bad of [null, {}, 'mem', { size: 8 }]) throwsCode(() => new ConcurrentBitmap(bad), TypeError, 'ERR_INVALID_ARG_TYPE', `mem ${bad}`)
  assert.equal(fs.existsSync(`/dev/shm/${name}`), true, 'only the valid call created the region')
})

test('opening with another size than another process: ERR_SIZE_MISMATCH naming both', async (t) => {
  const name = scratchName(t, 'mismatch')
  const child = forkFixture('exhaust.js', [name, 128]) // a region of 16 bytes
  const done = collect(child)
  await waitFor(child, (m) => m === 'ready')
  assert.throws(
    () => loadShared(name, 32),
    (e) => {
      assert.equal(e.code, 'ERR_SIZE_MISMATCH')
      assert.match(e.message, /16 bytes/)
      assert.match(e.message, /32 bytes/)
      return true
    },
  )
  assert.throws(() => ConcurrentBitmap.open(name, { capacity: 129 }), { code: 'ERR_SIZE_MISMATCH' })
  child.send('go')
  const { numbers } = await waitFor(child, (m) => m.numbers)
  assert.equal(numbers.length, 128, 'the other process was not disturbed')
  child.send('exit')
  await done
})

test('garbage, foreign, truncated and future-version regions: ERR_INCOMPATIBLE_REGION, untouched', (t) => {
  const directory = fs.mkdtempSync('/tmp/numballoc-bad-')
  t.after(() => fs.rmSync(directory, { recursive: true, force: true }))
  const garbage = Buffer.alloc(4096)
  for (let i = 0; i < garbage.length; i++) garbage[i] = ((i * 2654435761) >>> 13) | 1
  fs.writeFileSync(`${directory}/garbage`, garbage)
  fs.writeFileSync(`${directory}/text`, 'hello, this is not a region at all, just some text in a file\n'.repeat(4))
  fs.writeFileSync(`${directory}/short`, 'hi')
  loadShared('truncated', 1024, { directory }).close()
  fs.truncateSync(`${directory}/truncated`, 200)
  loadShared('future', 8, { directory }).close()
  const future = fs.readFileSync(`${directory}/future`)
  future.writeUInt32LE(99, 8)
  fs.writeFileSync(`${directory}/future`, future)
  // Eight zero bytes, then data: the magic is not set, but this is no unfinished region.
  const zeroThenData = Buffer.alloc(4052, 0x41)
  zeroThenData.fill(0, 0, 8)
  fs.writeFileSync(`${directory}/zero-then-data`, zeroThenData)
  // A valid header without its magic, but data after it: not what a dying creator leaves.
  loadShared('header-then-data', 8, { directory }).close()
  const headerThenData = fs.readFileSync(`${directory}/header-then-data`)
  headerThenData.fill(0, 0, 8)
  headerThenData[headerThenData.length - 1] = 7
  fs.writeFileSync(`${directory}/header-then-data`, headerThenData)
  for (const [name, size] of [
    ['garbage', 8],
    ['text', 8],
    ['short', 8],
    ['truncated', 1024],
    ['future', 8],
    ['zero-then-data', 8],
    ['header-then-data', 8],
  ]) {
    const before = fs.readFileSync(`${directory}/${name}`)
    assert.throws(() => loadShared(name, size, { directory }), { code: 'ERR_INCOMPATIBLE_REGION' }, name)
    assert.deepEqual(fs.readFileSync(`${directory}/${name}`), before, `${name} was modified`)
  }
  // The same in /dev/shm.
  const shmName = scratchName(t, 'garbage')
  fs.writeFileSync(`/dev/shm/${shmName}`, garbage)
  assert.throws(() => loadShared(shmName, 8), { code: 'ERR_INCOMPATIBLE_REGION' })
})

test('a region left empty or half-written by a dead creator is completed by the next opener', (t) => {
  const name = scratchName(t, 'orphan')
  fs.writeFileSync(`/dev/shm/${name}`, '') // created, then killed before sizing it
  const a = ConcurrentBitmap.open(name, { capacity: 64 })
  assert.equal(a.allocate() >= 0, true)
  a.close()
  destroyShared(name)
  fs.writeFileSync(`/dev/shm/${name}`, Buffer.alloc(100)) // sized, then killed before the magic
  const b = ConcurrentBitmap.open(name, { capacity: 256 })
  t.after(() => b.close())
  assert.equal(b.max, 256)
  assert.equal(b.count(), 0)
})

test('a FIFO, socket, directory or symlink under a region name fails at once with a code, on every path', async (t) => {
  const directory = fs.mkdtempSync('/tmp/numballoc-special-')
  t.after(() => fs.rmSync(directory, { recursive: true, force: true }))
  execFileSync('mkfifo', [`${directory}/fifo`])
  fs.mkdirSync(`${directory}/dir`)
  fs.symlinkSync('/etc/hostname', `${directory}/link`)
  const server = require('node:net').createServer().listen(`${directory}/socket`)
  await require('node:events').once(server, 'listening')
  t.after(() => server.close())
  const cli = path.join(__dirname, '..', 'bin', 'numballoc.js')
  for (const [name, codes] of [
    ['fifo', ['ERR_INCOMPATIBLE_REGION']],
    ['dir', ['EISDIR', 'ERR_INCOMPATIBLE_REGION']],
    ['link', ['ELOOP']],
    ['socket', ['ENXIO']],
  ]) {
    const coded = (e) => codes.includes(e.code)
    assert.throws(() => loadShared(name, 8, { directory }), coded, `loadShared ${name}`)
    assert.throws(() => loadShared(name, undefined, { directory }), coded, `loadShared ${name} without a size`)
    assert.throws(() => ConcurrentBitmap.open(name, { capacity: 8, directory }), coded, `open ${name}`)
    assert.throws(
      () => inspectShared(name, { directory }),
      (e) => /^E|^ERR_/.test(e.code),
      `inspectShared ${name}`,
    )
    assert.throws(
      () => reclaimShared(name, { directory }),
      (e) => /^E|^ERR_/.test(e.code),
      `reclaimShared ${name}`,
    )
    for (const command of ['inspect', 'destroy', 'reclaim']) {
      const out = require('node:child_process').spawnSync(process.execPath, [cli, command, name, '--dir', directory], { encoding: 'utf8', timeout: 10_000 })
      assert.equal(out.status, 1, `numballoc ${command} ${name}: ${out.stderr}${out.error ?? ''}`)
    }
  }
  assert.ok(fs.statSync(`${directory}/fifo`).isFIFO(), 'the FIFO is still there')
  assert.ok(fs.existsSync(`${directory}/link`), 'the symlink is still there')
})

test('a region cut short by another program while in use: reclaim() and opening refuse it, and the process still exits cleanly', (t) => {
  const name = scratchName(t, 'cut')
  const script = `
    const fs = require('node:fs')
    const { ConcurrentBitmap, loadShared } = require(${JSON.stringify(path.join(__dirname, '..'))})
    const ids = ConcurrentBitmap.open(${JSON.stringify(name)}, { capacity: 512 })
    ids.allocateMany(10)
    fs.truncateSync('/dev/shm/${name}', 200)
    const codes = []
    try { ids.reclaim() } catch (e) { codes.push(e.code) }
    try { loadShared(${JSON.stringify(name)}) } catch (e) { codes.push(e.code) }
    console.log(JSON.stringify(codes))`
  const out = require('node:child_process').spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' })
  assert.equal(out.signal, null, `the process died of ${out.signal}: ${out.stderr}`)
  assert.equal(out.status, 0, out.stderr)
  assert.deepEqual(JSON.parse(out.stdout), ['ERR_INCOMPATIBLE_REGION', 'ERR_INCOMPATIBLE_REGION'])
})

test('every option is checked before a region is created; huge lengths are refused with a code', (t) => {
  const name = scratchName(t, 'optsfirst')
  assert.throws(() => ConcurrentBitmap.open(name, { capacity: 8, releaseOnExit: 'yes' }), { code: 'ERR_INVALID_ARG_TYPE' })
  assert.equal(fs.existsSync(`/dev/shm/${name}`), false)
  const ids = ConcurrentBitmap.open(name, { capacity: 64 })
  t.after(() => ids.close())
  assert.throws(() => ids.freeMany({ length: 1e10 }), { code: 'ERR_OUT_OF_RANGE' })
  assert.equal(ids.count(), 0)
})

test('a batch call made from inside freeMany (a getter of its argument) neither sees nor spoils its list', (t) => {
  const name = scratchName(t, 'reentrant')
  const ids = ConcurrentBitmap.open(name, { capacity: 256 })
  t.after(() => ids.close())
  const held = ids.allocateMany(5)
  let inner
  const sneaky = new Proxy(held, {
    get(target, key) {
      if (key === '2' && inner === undefined) inner = ids.allocateMany(3)
      return target[key]
    },
  })
  ids.freeMany(sneaky)
  assert.equal(inner.length, 3)
  assert.deepEqual(
    inner.map((n) => ids.isAllocated(n)),
    [true, true, true],
    'the inner batch is still held',
  )
  assert.deepEqual(
    held.map((n) => ids.isAllocated(n)),
    [false, false, false, false, false],
    'the listed numbers were freed',
  )
  assert.equal(ids.count(), 3)
  ids.freeMany(inner)
  assert.deepEqual(ids.allocateMany(2).length, 2)
})

test("freeMany reads its argument's length once: a length that changes afterwards changes nothing", (t) => {
  const name = scratchName(t, 'lengthonce')
  const ids = ConcurrentBitmap.open(name, { capacity: 256 })
  t.after(() => ids.close())
  for (const later of [-1, 4.5, NaN, 1e10]) {
    const held = ids.allocateMany(5)
    let reads = 0
    const shifty = new Proxy(held, { get: (target, key) => (key === 'length' ? (reads++ === 0 ? 5 : later) : target[key]) })
    ids.freeMany(shifty)
    assert.equal(ids.count(), 0, `length ${later} on later reads`)
  }
})

test('without its native addon (an install with --ignore-scripts), requiring the package says so, with a code and what to do', (t) => {
  const os = require('node:os')
  const root = path.join(__dirname, '..')
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'numballoc-noaddon-'))
  t.after(() => fs.rmSync(dir, { recursive: true, force: true }))
  for (const file of ['index.js', 'package.json']) fs.copyFileSync(path.join(root, file), path.join(dir, file))
  fs.cpSync(path.join(root, 'lib'), path.join(dir, 'lib'), { recursive: true })
  const script = `try { require(${JSON.stringify(dir)}) } catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })) }`
  const out = require('node:child_process').spawnSync(process.execPath, ['-e', script], { encoding: 'utf8' })
  const { code, message } = JSON.parse(out.stdout)
  assert.equal(code, 'ERR_NATIVE_ADDON_MISSING')
  const { currentPlatform, packageOf } = require('../lib/platform.js')
  assert.ok(
    message.startsWith(
      `numballoc has no native addon for ${currentPlatform()}: ${packageOf(currentPlatform())}, the optional dependency that carries it, is not installed`,
    ),
    message,
  )
  assert.match(message, /npm rebuild numballoc/)
  // From ESM too, and a caught failure leaves the process running.
  fs.copyFileSync(path.join(root, 'index.mjs'), path.join(dir, 'index.mjs'))
  const esm = `import(${JSON.stringify(path.join(dir, 'index.mjs'))}).then(() => console.log('loaded'), (e) => { console.log(e.code); setTimeout(() => console.log('alive'), 50) })`
  const imported = require('node:child_process').spawnSync(process.execPath, ['--input-type=module', '-e', esm], { encoding: 'utf8' })
  assert.equal(imported.stdout, 'ERR_NATIVE_ADDON_MISSING\nalive\n', imported.stderr)
  assert.equal(imported.status, 0)
})

test('an addon file that is damaged, not a file, for another architecture, or of another version is a coded error, never a crash or a hang', (t) => {
  const os = require('node:os')
  const { spawnSync, execFileSync } = require('node:child_process')
  const { currentPlatform, binaryFile, packageOf } = require('../lib/platform.js')
  const root = path.join(__dirname, '..')
  const platform = currentPlatform()
  const built = fs.readFileSync(path.join(root, binaryFile(platform)))
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'numballoc-badaddon-'))
  t.after(() => fs.rmSync(work, { recursive: true, force: true }))
  let cases = 0
  /** The package as installed in an app, with `place(app)` done to it; what requiring it throws. */
  function requireWith(place) {
    const app = path.join(work, `app${cases++}`)
    const pkg = path.join(app, 'node_modules', 'numballoc')
    fs.mkdirSync(pkg, { recursive: true })
    for (const file of ['index.js', 'package.json']) fs.copyFileSync(path.join(root, file), path.join(pkg, file))
    fs.cpSync(path.join(root, 'lib'), path.join(pkg, 'lib'), { recursive: true })
    place(app, pkg)
    const script = "try { require('numballoc'); console.log('{}') } catch (e) { console.log(JSON.stringify({ code: e.code, message: e.message })) }"
    const out = spawnSync(process.execPath, ['-e', script], { cwd: app, encoding: 'utf8', timeout: 20_000 })
    assert.equal(out.status, 0, `a crash or a hang: ${out.signal} ${out.stderr}`)
    return JSON.parse(out.stdout)
  }
  /** The platform package holding `bytes` as its addon, at `version`. */
  const platformPackage = (bytes, version) => (app) => {
    const dir = path.join(app, 'node_modules', packageOf(platform))
    fs.mkdirSync(dir, { recursive: true })
    fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: packageOf(platform), version, main: binaryFile(platform) }))
    fs.writeFileSync(path.join(dir, binaryFile(platform)), bytes)
  }
  const { version } = require('../package.json')
  const foreign = Buffer.from(built)
  foreign.writeUInt16LE(foreign.readUInt16LE(18) === 183 ? 62 : 183, 18) // the other of x64 and arm64
  const expectations = [
    // Cut short, dlopen would die of SIGBUS.
    [platformPackage(built.subarray(0, Math.floor(built.length / 2)), version), /\(.*\) is cut short/],
    [platformPackage(foreign, version), /is built for (arm64|x64), and this process is/],
    [platformPackage(Buffer.from('not a library'), version), /is not a shared library/],
    [platformPackage(built, '0.0.1'), new RegExp(`needs ${packageOf(platform)} ${version}, and ${packageOf(platform)} 0.0.1 is installed`)],
    // A FIFO would block dlopen forever; a directory is no library.
    [(app, pkg) => execFileSync('mkfifo', [path.join(pkg, binaryFile(platform))]), /is not a regular file/],
    [(app, pkg) => fs.mkdirSync(path.join(pkg, binaryFile(platform))), /is not a regular file/],
  ]
  for (const [place, expected] of expectations) {
    const { code, message } = requireWith(place)
    assert.equal(code, 'ERR_NATIVE_ADDON_MISSING', message)
    assert.match(message, expected)
  }
  // And the real thing, as a package, loads.
  assert.deepEqual(requireWith(platformPackage(built, version)), {})
})

test('a class called without new, and every method and getter called on a foreign object, throw coded TypeErrors (async methods reject)', async () => {
  const { SharedMemory, PortPool, Lease } = require('..')
  for (const Class of [SharedMemory, ConcurrentBitmap, PortPool, Lease]) {
    assert.throws(() => Class(), { name: 'TypeError', code: 'ERR_CONSTRUCT_CALL_REQUIRED' }, `${Class.name}()`)
    let members = 0
    assert.equal(Object.create(Class.prototype).constructor, Class, `${Class.name}.prototype.constructor is the export`)
    const descriptors = Object.getOwnPropertyDescriptors(Class.prototype)
    for (const key of Reflect.ownKeys(descriptors)) {
      const descriptor = descriptors[key]
      if (key === 'constructor' || key === Symbol.toStringTag) continue
      const call = descriptor.get ?? descriptor.value
      for (const foreign of [{}, null, 5, Object.create(Class.prototype)]) {
        const expected = { name: 'TypeError', code: 'ERR_INVALID_THIS' }
        const what = `${Class.name}.${String(key)} on ${String(foreign)}`
        if (call.constructor.name === 'AsyncFunction') await assert.rejects(() => call.call(foreign, 1, 1), expected, what)
        else assert.throws(() => call.call(foreign, 1, 1), expected, what)
      }
      members++
    }
    assert.ok(members >= 3, `${Class.name} has ${members} members`)
  }
})

test('a hostile argument (a Proxy, a throwing getter) is described in a coded error, never thrown through', (t) => {
  const bitmap = ConcurrentBitmap.open(scratchName(t, 'hostile'), { capacity: 8 })
  t.after(() => bitmap.close())
  const trap = new Proxy(
    {},
    {
      get() {
        throw new Error('the proxy was asked')
      },
    },
  )
  const getter = {
    get constructor() {
      throw new Error('the getter was asked')
    },
  }
  for (const [value, said] of [
    [trap, 'an object'],
    [getter, 'an object'],
    [Object.create(null), 'an object'],
    [new Map(), 'an instance of Map'],
    [function named() {}, 'function named'],
  ]) {
    assert.throws(() => bitmap.free(value), { code: 'ERR_INVALID_ARG_TYPE', message: new RegExp(`Received ${said}$`) })
  }
  assert.throws(() => listShared({ directory: 'a\0b' }), { code: 'ERR_INVALID_NAME' })
})

test('a setter run while an error is made may close the region the error is about: a coded error, not an abort', (t) => {
  const script = `
    const { loadShared } = require(${JSON.stringify(path.join(__dirname, '..'))})
    const mem = loadShared(process.argv[1], 64)
    mem.close()
    require(${JSON.stringify(path.join(__dirname, '..'))}).destroyShared(process.argv[1])
    let armed = true
    Object.defineProperty(Object.prototype, 'code', {
      configurable: true,
      set(value) {
        Object.defineProperty(this, 'code', { value, writable: true, configurable: true, enumerable: true })
        if (armed && value === 'ERR_REGION_CLOSED') {
          armed = false
          mem.close()
        }
      },
    })
    try {
      mem.kind
    } catch (error) {
      console.log(error.code)
    }`
  const result = require('node:child_process').spawnSync(process.execPath, ['-e', script, scratchName(t, 'reentrant')], { encoding: 'utf8' })
  assert.deepEqual([result.status, result.signal, result.stdout], [0, null, 'ERR_REGION_CLOSED\n'], result.stderr)
})

test('an empty directory option is refused, not taken for the current directory', (t) => {
  const name = scratchName(t, 'emptydir')
  for (const call of [
    () => loadShared(name, 8, { directory: '' }),
    () => ConcurrentBitmap.open(name, { capacity: 8, directory: '' }),
    () => inspectShared(name, { directory: '' }),
  ]) {
    assert.throws(call, { code: 'ERR_INVALID_ARG_VALUE' })
  }
  assert.equal(fs.existsSync(name), false, 'nothing created in the current directory')
})

test('destroyShared and numballoc destroy remove what is a region, finished, cut short or unfinished, and nothing else', async (t) => {
  const directory = fs.mkdtempSync('/tmp/numballoc-destroy-')
  t.after(() => fs.rmSync(directory, { recursive: true, force: true }))
  const { execFileSync, spawnSync } = require('node:child_process')
  loadShared('finished', 8, { directory }).close()
  loadShared('cut', 1024, { directory }).close()
  fs.truncateSync(`${directory}/cut`, 100)
  fs.writeFileSync(`${directory}/unfinished`, Buffer.alloc(4096)) // sized by a creator that died
  fs.writeFileSync(`${directory}/foreign`, 'not a region\n')
  execFileSync('mkfifo', [`${directory}/fifo`])
  fs.mkdirSync(`${directory}/dir`)
  fs.symlinkSync(`${directory}/finished`, `${directory}/link`)
  for (const name of ['finished', 'cut', 'unfinished']) {
    assert.equal(destroyShared(name, { directory }), true, name)
    assert.equal(fs.existsSync(`${directory}/${name}`), false, name)
  }
  for (const name of ['foreign', 'fifo', 'dir', 'link']) {
    assert.throws(() => destroyShared(name, { directory }), { code: 'ERR_INCOMPATIBLE_REGION' }, name)
    assert.ok(fs.lstatSync(`${directory}/${name}`), `${name} is still there`)
  }
  const cli = path.join(__dirname, '..', 'bin', 'numballoc.js')
  loadShared('again', 8, { directory }).close()
  fs.writeFileSync(`${directory}/unfinished2`, Buffer.alloc(100))
  for (const name of ['again', 'unfinished2']) {
    assert.equal(spawnSync(process.execPath, [cli, 'destroy', name, '--dir', directory]).status, 0, name)
  }
  assert.equal(spawnSync(process.execPath, [cli, 'destroy', 'fifo', '--dir', directory], { timeout: 10_000 }).status, 1)
})

test('create: false on a missing region is ENOENT from shm_open; nothing is created', (t) => {
  const name = scratchName(t, 'nocreate')
  assert.throws(
    () => loadShared(name, 8, { create: false }),
    (e) => {
      assert.equal(e.code, 'ENOENT')
      assert.equal(e.syscall, 'shm_open')
      assert.equal(e.errno, -2)
      assert.match(e.message, /^ENOENT: no such file or directory, shm_open/)
      return true
    },
  )
  assert.equal(fs.existsSync(`/dev/shm/${name}`), false)
  loadShared(name, 8).close()
  loadShared(name, 8, { create: false }).close()
})

test('new regions are 0600 unless asked otherwise, whatever the umask', (t) => {
  const a = scratchName(t, 'mode')
  loadShared(a, 8).close()
  assert.equal(fs.statSync(`/dev/shm/${a}`).mode & 0o777, 0o600)
  const b = scratchName(t, 'mode')
  const old = process.umask(0o077)
  try {
    loadShared(b, 8, { mode: 0o660 }).close()
  } finally {
    process.umask(old)
  }
  assert.equal(fs.statSync(`/dev/shm/${b}`).mode & 0o777, 0o660)
})

test('options are the object own properties: a polluted Object.prototype neither opens regions to others nor changes them', (t) => {
  const name = scratchName(t, 'polluted')
  // In a child: the pollution would reach every later test of this process.
  const script = `
    const nb = require(${JSON.stringify(path.join(__dirname, '..'))})
    Object.prototype.mode = 0o666
    Object.prototype.holders = false
    Object.prototype.capacity = 5
    Object.prototype.policy = 'bogus'
    const bitmap = nb.ConcurrentBitmap.open(${JSON.stringify(name)}, { capacity: 64 })
    const mem = nb.loadShared(${JSON.stringify(name)})
    console.log(JSON.stringify({ max: bitmap.max, policy: bitmap.policy, holders: mem.tracksHolders }))
    mem.close()
    bitmap.close()`
  const out = JSON.parse(execFileSync(process.execPath, ['-e', script], { encoding: 'utf8' }))
  assert.deepEqual(out, { max: 64, policy: 'any', holders: true })
  assert.equal(fs.statSync(`/dev/shm/${name}`).mode & 0o777, 0o600)
})

test('permission denied is EACCES from shm_open', async (t) => {
  const name = scratchName(t, 'perm')
  const mem = loadShared(name, 8) // 0600, owned by this user
  t.after(() => mem.close())
  let child
  if (process.getuid() === 0) {
    child = forkFixture('open.js', [name, 8, 65534]) // root ignores modes: ask as 'nobody'
  } else {
    fs.chmodSync(`/dev/shm/${name}`, 0o000)
    child = forkFixture('open.js', [name, 8])
  }
  const [result] = await collect(child)
  assert.deepEqual({ code: result.code, syscall: result.syscall }, { code: 'EACCES', syscall: 'shm_open' }, result.message)
})

test('a directory that is not a directory is ENOTDIR from open', (t) => {
  const directory = fs.mkdtempSync('/tmp/numballoc-notdir-')
  t.after(() => fs.rmSync(directory, { recursive: true, force: true }))
  fs.writeFileSync(`${directory}/file`, '')
  assert.throws(() => loadShared('x', 8, { directory: `${directory}/file` }), { code: 'ENOTDIR', syscall: 'open' })
})

test('a region larger than /dev/shm is ENOSPC at open, and leaves nothing behind', (t) => {
  const name = scratchName(t, 'enospc')
  assert.throws(() => loadShared(name, 2 ** 39), { code: 'ENOSPC', syscall: 'posix_fallocate' })
  assert.equal(fs.existsSync(`/dev/shm/${name}`), false)
})

/** Why a test that mounts a tmpfs of its own cannot run here, or false if it can. */
function noPrivateMounts() {
  if (process.getuid() !== 0) return 'mounting a tmpfs needs root'
  const probe = require('node:child_process').spawnSync('unshare', ['--mount', '--fork', 'true'], { encoding: 'utf8' })
  if (probe.error || probe.status !== 0) return `unshare --mount: ${probe.error?.message ?? probe.stderr.trim()}`
  return false
}

test('on a full tmpfs, a region file with holes is a coded error for every opener, never a SIGBUS', { skip: noPrivateMounts() }, (t) => {
  const directory = fs.mkdtempSync('/tmp/numballoc-full-')
  t.after(() => fs.rmSync(directory, { recursive: true, force: true }))
  // In a mount namespace of its own: the tmpfs goes with the process.
  const script = `
    const assert = require('node:assert/strict')
    const fs = require('node:fs')
    const nb = require(${JSON.stringify(path.join(__dirname, '..'))})
    const directory = process.argv[1]
    const real = nb.ConcurrentBitmap.open('real', { directory, capacity: 4096 * 8 })
    real.allocate()
    real.close()
    const bytes = fs.readFileSync(directory + '/real')
    nb.destroyShared('real', { directory })
    // A sparse copy (its first page only) and an empty sparse file under region names.
    const copy = fs.openSync(directory + '/copy', 'w')
    fs.writeSync(copy, bytes, 0, 4096, 0)
    fs.ftruncateSync(copy, bytes.length)
    fs.closeSync(copy)
    fs.truncateSync(fs.openSync(directory + '/empty', 'w'), 1 << 20)
    // Then the filesystem is filled.
    const filler = fs.openSync(directory + '/filler', 'w')
    try {
      for (;;) fs.writeSync(filler, Buffer.alloc(4096, 1))
    } catch (error) {
      assert.equal(error.code, 'ENOSPC')
    }
    const codes = []
    for (const name of ['copy', 'empty']) {
      for (const use of [
        () => nb.inspectShared(name, { directory }),
        () => nb.loadShared(name, undefined, { directory }),
        () => nb.ConcurrentBitmap.open(name, { directory, capacity: 4096 * 8 }),
      ]) {
        try {
          use()
          codes.push('opened')
        } catch (error) {
          codes.push(error.code)
        }
      }
    }
    console.log(codes.join(' '))`
  const result = spawnSync(
    'unshare',
    ['--mount', '--fork', 'sh', '-c', `mount -t tmpfs -o size=256k tmpfs "$1" && exec "$2" -e "$3" "$1"`, 'sh', directory, process.execPath, script],
    {
      encoding: 'utf8',
    },
  )
  assert.deepEqual([result.status, result.signal], [0, null], result.stderr)
  assert.equal(
    result.stdout.trim(),
    [
      ['ERR_INCOMPATIBLE_REGION', 'ENOSPC', 'ENOSPC'], // a copy: not read; reserving its holes does not fit
      ['ERR_INCOMPATIBLE_REGION', 'ERR_INCOMPATIBLE_REGION', 'ENOSPC'], // unfinished; completing it does not fit
    ]
      .flat()
      .join(' '),
  )
})

test('bad arguments to ranges, blocks, batches and policies: typed errors, nothing changes', (t) => {
  const bitmap = ConcurrentBitmap.open(scratchName(t, 'badnew'), { capacity: 100 })
  t.after(() => bitmap.close())
  const held = bitmap.allocate()
  const calls = {
    allocateInRange: [
      [1, 5],
      ['1', 5],
      [5, '9'],
    ],
    allocateBlock: [[2, 1], ['2'], [2, '1']],
    freeBlock: [
      [held, 1],
      ['0', 1],
      [0, '1'],
    ],
    allocateMany: [[2], ['2']],
  }
  for (const [method, [, ...wrongTypes]] of Object.entries(calls)) {
    for (const args of wrongTypes) throwsCode(() => bitmap[method](...args), TypeError, 'ERR_INVALID_ARG_TYPE', `${method}(${args})`)
  }
  const outOfRange = [
    ['allocateInRange', [5, 4]],
    ['allocateInRange', [-1, 5]],
    ['allocateInRange', [0, 100]],
    ['allocateInRange', [1.5, 3]],
    ['allocateBlock', [0]],
    ['allocateBlock', [101]],
    ['allocateBlock', [2, 0]],
    ['allocateBlock', [2, 1.5]],
    ['freeBlock', [99, 2]],
    ['freeBlock', [0, 0]],
    ['freeBlock', [-1, 1]],
    ['allocateMany', [-1]],
    ['allocateMany', [101]],
    ['allocateMany', [NaN]],
    ['freeMany', [[100]]],
    ['freeMany', [[held, -1]]],
    ['freeMany', [[0.5]]],
  ]
  for (const [method, args] of outOfRange) throwsCode(() => bitmap[method](...args), RangeError, 'ERR_OUT_OF_RANGE', `${method}(${JSON.stringify(args)})`)
  for (const bad of [null, 5, 'abc', undefined]) throwsCode(() => bitmap.freeMany(bad), TypeError, 'ERR_INVALID_ARG_TYPE', `freeMany(${bad})`)
  throwsCode(() => bitmap.freeMany([held, '3']), TypeError, 'ERR_INVALID_ARG_TYPE', 'freeMany with a string')
  throwsCode(() => bitmap.freeMany([held, held]), Error, 'ERR_NOT_ALLOCATED', 'freeMany listing a number twice')
  for (const policy of ['best', '', 0, null]) {
    throwsCode(() => ConcurrentBitmap.open(scratchName(t, 'badpolicy'), { capacity: 8, policy }), TypeError, 'ERR_INVALID_ARG_VALUE', `policy ${policy}`)
  }
  assert.equal(bitmap.count(), 1)
  assert.ok(bitmap.isAllocated(held))
  assert.deepEqual(bitmap.allocateMany(0), [])
})

test('bad holders / reclaimWhenFull options and holderOf arguments: typed errors', (t) => {
  const name = scratchName(t, 'badholders')
  for (const bad of ['yes', 1, null]) {
    throwsCode(() => loadShared(name, 8, { holders: bad }), TypeError, 'ERR_INVALID_ARG_TYPE', `holders ${bad}`)
    throwsCode(() => ConcurrentBitmap.open(name, { capacity: 8, reclaimWhenFull: bad }), TypeError, 'ERR_INVALID_ARG_TYPE', `reclaimWhenFull ${bad}`)
  }
  const bitmap = ConcurrentBitmap.open(name, { capacity: 64 })
  t.after(() => bitmap.close())
  for (const bad of notNumbers) throwsCode(() => bitmap.holderOf(bad), TypeError, 'ERR_INVALID_ARG_TYPE', `holderOf(${typeof bad})`)
  for (const bad of [-1, 64, 1.5, NaN]) throwsCode(() => bitmap.holderOf(bad), RangeError, 'ERR_OUT_OF_RANGE', `holderOf(${bad})`)
  assert.equal(bitmap.holderOf(3), null)
  bitmap.close()
  throwsCode(() => bitmap.reclaim(), Error, 'ERR_REGION_CLOSED', 'reclaim after close')
})
