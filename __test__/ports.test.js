'use strict'
// PortPool and the get-port drop-in, on real sockets and real processes.
const test = require('node:test')
const assert = require('node:assert')
const fs = require('node:fs')
const { PortPool, portNumbers, inspectShared, listShared, Lease } = require('..')
const { scratchName, collect, forkFixture, waitFor, freePortRange, occupy, portIsFree } = require('./helpers')
const { portRangeOfTag } = require('../lib/ports.js')

async function openPool(t, count, tag = 'pool') {
  const name = scratchName(t, tag)
  const from = await freePortRange(count)
  const pool = await PortPool.open(name, { from, to: from + count - 1 })
  t.after(() => pool.close())
  return { name, from, to: from + count - 1, pool }
}

test('processes asking at once get distinct ports that cover the pool', async (t) => {
  const { name, from, to } = await openPool(t, 24)
  const children = Array.from({ length: 4 }, () => forkFixture('ports.js', [name, from, to, 6, 'wait']))
  const done = children.map(collect)
  await Promise.all(children.map((c) => waitFor(c, (m) => m === 'ready')))
  const reports = children.map((c) => waitFor(c, (m) => m.ports))
  for (const c of children) c.send('go')
  const got = await Promise.all(reports)
  for (const c of children) c.send('exit')
  await Promise.all(done)
  const ports = got.flatMap((r) => r.ports).sort((a, b) => a - b)
  assert.deepStrictEqual(
    ports,
    Array.from({ length: 24 }, (_, i) => from + i),
  )
  assert.ok(got.every((r) => r.error === null))
})

test('a port another program listens on is skipped, not handed out, and tried again later', async (t) => {
  const { from, pool } = await openPool(t, 3)
  const outsider = await occupy(from + 1)
  const first = await pool.getPort()
  const second = await pool.getPort()
  assert.deepStrictEqual([first, second].sort(), [from, from + 2])
  await assert.rejects(pool.getPort(), (e) => e.code === 'ERR_NO_FREE_NUMBER' && /1 excluded or in use by other programs/.test(e.message))
  assert.strictEqual(pool.count(), 2, 'the busy port is not held after the search')
  assert.strictEqual(pool.holderOf(from + 1), null)
  await new Promise((resolve) => outsider.close(resolve))
  assert.strictEqual(await pool.getPort(), from + 1, 'once free, it is handed out')
})

test('the port handed out can be listened on, and is not handed out again until released', async (t) => {
  const { from, to, pool } = await openPool(t, 4)
  const seen = new Set()
  for (let i = 0; i < 4; i++) {
    const port = await pool.getPort()
    assert.ok(port >= from && port <= to && !seen.has(port))
    seen.add(port)
    assert.ok(await portIsFree(port), `${port} is free to listen on`)
  }
  await assert.rejects(pool.getPort(), { code: 'ERR_NO_FREE_NUMBER' })
  pool.release(from + 2)
  assert.strictEqual(await pool.getPort(), from + 2)
  assert.throws(() => pool.release(to + 1), { code: 'ERR_OUT_OF_RANGE' })
  pool.release(from)
  assert.throws(() => pool.release(from), { code: 'ERR_NOT_ALLOCATED' })
})

test('preferred ports come first, in order; excluded ports never', async (t) => {
  const { from, pool } = await openPool(t, 6)
  assert.strictEqual(await pool.getPort({ port: from + 4 }), from + 4)
  assert.strictEqual(await pool.getPort({ port: [from + 4, from + 3, from] }), from + 3)
  assert.strictEqual(await pool.getPort({ port: portNumbers(from, from + 5), exclude: [from, from + 1] }), from + 2)
  // No preferred port free: any other port of the pool, still never an excluded one.
  const rest = await pool.getPort({ port: [from + 2], exclude: new Set([from, from + 1]) })
  assert.strictEqual(rest, from + 5)
  await assert.rejects(pool.getPort({ exclude: [from, from + 1] }), { code: 'ERR_NO_FREE_NUMBER' })
  assert.strictEqual(pool.count(), 4, 'excluded ports were not kept')
})

test('leases give the port back, with Symbol.dispose too', async (t) => {
  const { from, pool } = await openPool(t, 2)
  const lease = await pool.acquire({ port: from + 1 })
  assert.ok(lease instanceof Lease)
  assert.strictEqual(lease.value, from + 1)
  assert.strictEqual(pool.count(), 1)
  lease[Symbol.dispose]()
  assert.strictEqual(pool.count(), 0)
  assert.throws(() => lease.release(), { code: 'ERR_LEASE_RELEASED' })
})

test("a killed worker's ports come back when the pool runs out, and when preferred", async (t) => {
  const { name, from, to, pool } = await openPool(t, 3)
  const child = forkFixture('ports.js', [name, from, to, 'all'])
  const exited = new Promise((resolve) => child.once('exit', resolve))
  const { ports, error } = await waitFor(child, (m) => m.ports)
  assert.deepStrictEqual([ports.length, error], [3, 'ERR_NO_FREE_NUMBER'])
  child.kill('SIGKILL')
  await exited
  // The pool is full of a dead process's ports: a preferred one comes back at once...
  assert.strictEqual(await pool.getPort({ port: from + 1 }), from + 1)
  // ...and so do the others when nothing else is free.
  const rest = [await pool.getPort(), await pool.getPort()].sort()
  assert.deepStrictEqual(rest, [from, from + 2])
  assert.deepStrictEqual(
    inspectShared(name).holders.map((h) => [h.pid, h.alive]),
    [[process.pid, true]],
  )
})

test('bad input is refused with a code, and nothing is created', async (t) => {
  const name = scratchName(t, 'badpool')
  const refuse = (options, code, what) => assert.rejects(PortPool.open(name, options), (e) => e.code === code || assert.fail(`${what}: ${e.code} ${e.message}`))
  await refuse({ from: 3100, to: 3000 }, 'ERR_OUT_OF_RANGE', 'from > to')
  for (const [from, to] of [
    [0, 10],
    [65530, 65536],
    [-1, 5],
    [1.5, 10],
    [10, 10.5],
    [NaN, 10],
  ]) {
    await refuse({ from, to }, 'ERR_OUT_OF_RANGE', `${from}-${to}`)
  }
  for (const [from, to] of [
    ['3000', 3001],
    [3000, undefined],
    [undefined, 3001],
    [3000n, 3001],
  ]) {
    await refuse({ from, to }, 'ERR_INVALID_ARG_TYPE', `${typeof from}-${typeof to}`)
  }
  await refuse(undefined, 'ERR_INVALID_ARG_TYPE', 'no options')
  await refuse({ from: 3000, to: 3001, host: 'no-such-host.invalid' }, 'ERR_INVALID_HOST', 'unknown host')
  await refuse({ from: 3000, to: 3001, host: '192.0.2.1' }, 'ERR_INVALID_HOST', 'not this machine')
  await refuse({ from: 3000, to: 3001, host: 5 }, 'ERR_INVALID_ARG_TYPE', 'host type')
  await assert.rejects(PortPool.open(5, { from: 3000, to: 3001 }), { code: 'ERR_INVALID_ARG_TYPE' })
  assert.ok(!listShared().includes(name), 'no region was created')
  assert.throws(() => portNumbers(10, 5), { code: 'ERR_OUT_OF_RANGE' })
  assert.throws(() => portNumbers(0, 5), { code: 'ERR_OUT_OF_RANGE' })
  assert.throws(() => portNumbers('1', 5), { code: 'ERR_INVALID_ARG_TYPE' })
  assert.deepStrictEqual([...portNumbers(8000, 8003)], [8000, 8001, 8002, 8003])
})

test('bad acquire options are refused before anything is held', async (t) => {
  const { from, to, pool } = await openPool(t, 2)
  await assert.rejects(pool.getPort({ port: to + 1 }), { code: 'ERR_OUT_OF_RANGE' })
  await assert.rejects(pool.getPort({ port: [from, 'x'] }), { code: 'ERR_INVALID_ARG_TYPE' })
  await assert.rejects(pool.getPort({ port: '3000' }), { code: 'ERR_INVALID_ARG_TYPE' })
  await assert.rejects(pool.getPort({ exclude: 5 }), { code: 'ERR_INVALID_ARG_TYPE' })
  await assert.rejects(pool.getPort({ exclude: [70000] }), { code: 'ERR_OUT_OF_RANGE' })
  await assert.rejects(pool.getPort({ host: 'no-such-host.invalid' }), { code: 'ERR_INVALID_HOST' })
  await assert.rejects(pool.getPort(null), { code: 'ERR_INVALID_ARG_TYPE' })
  assert.strictEqual(pool.count(), 0)
  assert.throws(() => new PortPool(), { code: 'ERR_ILLEGAL_CONSTRUCTOR' })
})

test('a pool opened with another range is refused, naming the range it has', async (t) => {
  const { name, from, to } = await openPool(t, 4)
  await assert.rejects(PortPool.open(name, { from, to: to + 1 }), (e) => e.code === 'ERR_POOL_MISMATCH' && e.message.includes(`ports ${from}-${to}`))
  // Same count of ports, shifted: the sizes agree, the tag does not.
  await assert.rejects(PortPool.open(name, { from: from + 1, to: to + 1 }), (e) => e.code === 'ERR_POOL_MISMATCH' && e.message.includes(`${from}-${to}`))
})

test('a host given to the pool is where ports are checked', async (t) => {
  const name = scratchName(t, 'host')
  const from = await freePortRange(2)
  const pool = await PortPool.open(name, { from, to: from + 1, host: '127.0.0.1' })
  t.after(() => pool.close())
  assert.strictEqual(pool.host, '127.0.0.1')
  const outsider = await occupy(from)
  t.after(() => outsider.close())
  assert.strictEqual(await pool.getPort(), from + 1)
  const tag = inspectShared(name).tag
  assert.strictEqual(tag, (0x50n << 56n) | (BigInt(from) << 16n) | BigInt(from + 1))
})

test('getPort, releasePort: the drop-in over the per-user pool (here NUMBALLOC_PORT_POOL)', async (t) => {
  const pool = scratchName(t, 'dropin')
  const from = await freePortRange(3)
  const script = `
    const { getPort, releasePort, portNumbers } = require(${JSON.stringify(require.resolve('..'))})
    ;(async () => {
      const first = await getPort({ port: portNumbers(${from}, ${from + 2}) })
      const second = await getPort({ port: portNumbers(${from}, ${from + 2}), reserve: true })
      const excluded = await getPort({ port: [${from}, ${from + 2}], exclude: [${from + 2}] })
      releasePort(first)
      const again = await getPort({ port: ${from} })
      const any = await getPort()
      let doubleRelease = null
      releasePort(any)
      try { releasePort(any) } catch (e) { doubleRelease = e.code }
      console.log(JSON.stringify({ first, second, excluded, again, any, doubleRelease }))
    })()`
  const { execFileSync } = require('node:child_process')
  const out = execFileSync(process.execPath, ['-e', script], { env: { ...process.env, NUMBALLOC_PORT_POOL: pool }, encoding: 'utf8' })
  const got = JSON.parse(out)
  assert.deepStrictEqual([got.first, got.second, got.again, got.doubleRelease], [from, from + 1, from, 'ERR_NOT_ALLOCATED'])
  assert.ok(got.excluded >= 49152 && got.excluded <= 65535, `no preferred port free: the dynamic range (${got.excluded})`)
  assert.ok(got.any >= 49152 && got.any <= 65535 && got.any !== got.excluded, `${got.any}`)
  const report = inspectShared(pool)
  assert.strictEqual(portRangeOfTag(report.tag).to, 65535)
  assert.strictEqual(report.capacity, 65535, 'the capacity asked for: ports 1-65535')
})

test(
  'the per-user pool is private: one another user made first, or one others can use, is refused with a code',
  { skip: process.getuid() !== 0 ? 'needs root to act as another user' : false },
  (t) => {
    const { execFileSync, spawnSync } = require('node:child_process')
    const pkg = JSON.stringify(require.resolve('..'))
    const pool = scratchName(t, 'private')
    const getPortIn = (prefix) =>
      spawnSync(
        prefix[0],
        [
          ...prefix.slice(1),
          process.execPath,
          '-e',
          `
    require(${pkg}).getPort().then((port) => console.log(JSON.stringify({ port })), (e) => console.log(JSON.stringify({ code: e.code, message: e.message })))`,
        ],
        {
          env: { ...process.env, NUMBALLOC_PORT_POOL: pool },
          encoding: 'utf8',
        },
      )
    // Another user (nobody) gets there first: its pool, owned by it.
    const nobody = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups']
    const first = getPortIn(nobody)
    assert.ok(JSON.parse(first.stdout).port > 0, `${first.stdout}${first.stderr}`)
    const before = fs.readFileSync(`/dev/shm/${pool}`)
    const victim = JSON.parse(getPortIn(['env']).stdout)
    assert.equal(victim.code, 'ERR_REGION_NOT_PRIVATE')
    assert.match(victim.message, /belongs to uid 65534/)
    assert.deepEqual(fs.readFileSync(`/dev/shm/${pool}`), before, "the other user's pool was not touched")
    // Ours, but usable by others.
    execFileSync('rm', [`/dev/shm/${pool}`])
    assert.ok(JSON.parse(getPortIn(['env']).stdout).port > 0)
    fs.chmodSync(`/dev/shm/${pool}`, 0o666)
    const shared = JSON.parse(getPortIn(['env']).stdout)
    assert.equal(shared.code, 'ERR_REGION_NOT_PRIVATE')
    assert.match(shared.message, /mode 0o666/)
    assert.match(shared.message, new RegExp(`remove the file \\(/dev/shm/${pool}\\)`))
    // Ours and 0600, but with a second name (a hard link someone planted): refused too.
    fs.chmodSync(`/dev/shm/${pool}`, 0o600)
    fs.linkSync(`/dev/shm/${pool}`, `/dev/shm/${pool}-link`)
    t.after(() => fs.rmSync(`/dev/shm/${pool}-link`, { force: true }))
    const linked = JSON.parse(getPortIn(['env']).stdout)
    assert.equal(linked.code, 'ERR_REGION_NOT_PRIVATE')
    assert.match(linked.message, /hard link/)
  },
)

test("getPort() moves on after a release, stays out of the kernel's ephemeral range, names ports in errors, and refuses endless options", (t) => {
  const pool = scratchName(t, 'dropin2')
  const script = `
    const { getPort, releasePort } = require(${JSON.stringify(require.resolve('..'))})
    ;(async () => {
      const a = await getPort()
      releasePort(a)
      const b = await getPort()
      let twice = null
      releasePort(b)
      try { releasePort(b) } catch (e) { twice = { code: e.code, message: e.message } }
      let endless = null
      try { await getPort({ exclude: (function* () { for (;;) yield 1 })() }) } catch (e) { endless = e.code }
      console.log(JSON.stringify({ a, b, twice, endless }))
    })()`
  const { execFileSync } = require('node:child_process')
  const out = JSON.parse(execFileSync(process.execPath, ['-e', script], { env: { ...process.env, NUMBALLOC_PORT_POOL: pool }, encoding: 'utf8' }))
  assert.notStrictEqual(out.b, out.a, 'a port just released is not handed out again at once')
  const [low, high] = fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number)
  for (const port of [out.a, out.b]) {
    assert.ok(port >= 49152 && port <= 65535 && (port < low || port > high), `${port} is in the ephemeral range ${low}-${high}`)
  }
  assert.strictEqual(out.twice.code, 'ERR_NOT_ALLOCATED')
  assert.match(out.twice.message, new RegExp(`^port ${out.b} is not held`))
  assert.strictEqual(out.endless, 'ERR_OUT_OF_RANGE')
  // A bad argument is refused before the pool is created.
  const other = scratchName(t, 'dropin3')
  const refused = execFileSync(
    process.execPath,
    ['-e', `try { require(${JSON.stringify(require.resolve('..'))}).releasePort('x') } catch (e) { console.log(e.code) }`],
    { env: { ...process.env, NUMBALLOC_PORT_POOL: other }, encoding: 'utf8' },
  )
  assert.strictEqual(refused.trim(), 'ERR_INVALID_ARG_TYPE')
  assert.strictEqual(fs.existsSync(`/dev/shm/${other}`), false)
})

test('getPortSync: what getPort does, without await, for config files; unique across processes started at once', async (t) => {
  const { spawn, execFileSync } = require('node:child_process')
  const pool = scratchName(t, 'sync')
  const from = await freePortRange(8)
  const outside = await occupy(from) // another program's listener: passed over
  t.after(() => outside.close())
  const pkg = JSON.stringify(require.resolve('..'))
  const env = { ...process.env, NUMBALLOC_PORT_POOL: pool }
  // Six processes at once, as a test runner's workers evaluating a config file would.
  const script = `
    const { getPortSync } = require(${pkg})
    const port = getPortSync({ port: require(${pkg}).portNumbers(${from}, ${from + 7}) })
    process.stdout.write(String(port) + '\\n')
    process.stdin.resume() // hold it while the others pick theirs, until told to end`
  const children = Array.from({ length: 6 }, () => spawn(process.execPath, ['-e', script], { env, stdio: ['pipe', 'pipe', 'inherit'] }))
  const ports = await Promise.all(
    children.map(
      (child) =>
        new Promise((resolve, reject) => {
          let out = ''
          child.stdout.on('data', (d) => {
            out += d
            if (out.endsWith('\n')) resolve(Number(out))
          })
          child.on('exit', (code) => reject(new Error(`exit ${code} before a port`)))
        }),
    ),
  )
  await Promise.all(children.map((child) => new Promise((resolve) => child.on('exit', resolve).stdin.end())))
  assert.strictEqual(new Set(ports).size, 6, `distinct: ${ports}`)
  for (const port of ports) assert.ok(port > from && port <= from + 7, `${port}: in range, not the busy ${from}`)
  const bad = execFileSync(
    process.execPath,
    ['-e', `try { require(${pkg}).getPortSync({ host: 'no.such.host.invalid' }) } catch (e) { console.log(e.code) }`],
    { env, encoding: 'utf8' },
  )
  assert.strictEqual(bad.trim(), 'ERR_INVALID_HOST')
  const pool2 = await PortPool.open(scratchName(t, 'syncpool'), { from, to: from + 7, host: '127.0.0.1' })
  t.after(() => pool2.close())
  const port = pool2.getPortSync()
  assert.ok(port > from && port <= from + 7)
  assert.strictEqual(pool2.count(), 1, 'the busy port was not kept')
})

test('a PortPool subclass opens instances of itself', async (t) => {
  class Pool extends PortPool {}
  const name = scratchName(t, 'subclass')
  const from = await freePortRange(2)
  const pool = await Pool.open(name, { from, to: from + 1 })
  t.after(() => pool.close())
  assert.ok(pool instanceof Pool)
  const port = await pool.acquire()
  assert.ok(port.value >= from && port.value <= from + 1)
  port.release()
  await assert.rejects(PortPool.open.call(class Other {}, name, { from, to: from + 1 }), { code: 'ERR_INVALID_THIS' })
})
