'use strict'
// npm run bench: JS-side benchmarks, every figure a ratio against a baseline measured in the same
// run (this machine is shared and noisy). BENCHMARKS.md records the output.
const cluster = require('node:cluster')
const { fork } = require('node:child_process')
const os = require('node:os')
const path = require('node:path')
const { ConcurrentBitmap, destroyShared } = require('..')
const { redisBench } = require('./redis.js')

const quick = process.argv.includes('--quick')
const ROUNDS = quick ? 3 : 7
const name = (tag) => `numballoc-bench-${tag}-${process.pid}`
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
const fmt = (ns) => (ns >= 1e6 ? `${(ns / 1e6).toFixed(2)} ms` : ns >= 1000 ? `${(ns / 1000).toFixed(1)} µs` : `${ns.toFixed(1)} ns`)

/** ns per iteration of `body`, median of ROUNDS timed runs of `count` iterations. */
function measure(count, body) {
  body(Math.min(count, 100000)) // warm up the JIT
  const samples = []
  for (let r = 0; r < ROUNDS; r++) {
    const start = process.hrtime.bigint()
    body(count)
    samples.push(Number(process.hrtime.bigint() - start) / count)
  }
  return median(samples)
}

function pairVsAtomics() {
  const capacity = 2048
  const bitmap = ConcurrentBitmap.open(name('pair'), { capacity })
  const words = new Int32Array(new SharedArrayBuffer(capacity / 8))
  // The in-process floor: the same allocate (find a zero bit, CAS it) and free (atomic AND) in JS.
  const jsAllocate = () => {
    for (let w = 0; w < words.length; w++) {
      for (let current = Atomics.load(words, w); ~current !== 0; current = Atomics.load(words, w)) {
        const bit = 31 - Math.clz32(~current & (current + 1))
        if (Atomics.compareExchange(words, w, current, current | (1 << bit)) === current) return w * 32 + bit
      }
    }
    return -1
  }
  const jsFree = (n) => Atomics.and(words, n >> 5, ~(1 << (n & 31)))
  const count = quick ? 1e6 : 5e6
  const floor = measure(count, (k) => {
    for (let i = 0; i < k; i++) jsFree(jsAllocate())
  })
  const ours = measure(count, (k) => {
    for (let i = 0; i < k; i++) bitmap.free(bitmap.allocate())
  })
  const tryOurs = measure(count, (k) => {
    for (let i = 0; i < k; i++) bitmap.free(bitmap.tryAllocate())
  })
  // A napi-rs generated function (handle lookup, an f64 argument, a boolean result), for scale.
  const generated = measure(count, (k) => {
    for (let i = 0; i < k; i++) bitmap.isAllocated(5)
  })
  // A second allocator used in turn with the first: every allocator of a thread shares one hot
  // path (src/hot.rs), so this should cost what one does.
  const second = ConcurrentBitmap.open(name('pair-second'), { capacity })
  const inTurn = measure(count, (k) => {
    for (let i = 0; i < k; i += 2) {
      bitmap.free(bitmap.allocate())
      second.free(second.allocate())
    }
  })
  second.close()
  destroyShared(name('pair-second'))
  const batch = 64
  const many =
    measure(count / batch, (k) => {
      for (let i = 0; i < k; i++) bitmap.freeMany(bitmap.allocateMany(batch))
    }) / batch
  bitmap.close()
  destroyShared(name('pair'))
  return [
    ['pure-JS Atomics bitmap on a SharedArrayBuffer (in-process floor)', floor, 1],
    ['numballoc allocate() + free()', ours, ours / floor],
    ['numballoc tryAllocate() + free()', tryOurs, tryOurs / floor],
    ['numballoc allocate() + free(), two allocators in turn', inTurn, inTurn / floor],
    [`numballoc allocateMany(${batch}) + freeMany(), per number`, many, many / floor],
    ['numballoc isAllocated(n): one call of a napi-rs generated function', generated, generated / floor],
  ]
}

function runWorker(args, viaCluster) {
  const child = viaCluster ? cluster.fork({ BENCH_ARGS: JSON.stringify(args) }) : fork(path.join(__dirname, 'worker.js'), args.map(String))
  const proc = viaCluster ? child.process : child
  return {
    child,
    result: new Promise((resolve, reject) => {
      const messages = []
      child.on('message', (m) => messages.push(m))
      proc.on('exit', (code) => (code === 0 ? resolve(messages) : reject(new Error(`worker exited ${code}`))))
    }),
  }
}

/** Per unique number handed to a worker process: numballoc, a primary over IPC, get-port. */
async function perNumberPeers() {
  cluster.setupPrimary({ exec: path.join(__dirname, 'worker.js') })
  const rows = []
  const region = name('peers')
  const count = quick ? 20000 : 100000
  const samples = { numballoc: [], ipc: [], ourport: [], getport: [] }
  for (let r = 0; r < ROUNDS; r++) {
    const a = runWorker(['numballoc', region, 1024, count * 10], true)
    samples.numballoc.push((await a.result).find((m) => m.ns).ns)

    // What cluster users write by hand: the primary owns a free list and answers requests.
    const free = Array.from({ length: 1024 }, (_, i) => i)
    const b = runWorker(['ipc', count / 10], true)
    b.child.on('message', (m) => {
      if (m.want) b.child.send({ number: free.pop() })
      if (m.giveBack !== undefined) free.push(m.giveBack)
    })
    samples.ipc.push((await b.result).find((m) => m.ns).ns)

    const d = runWorker(['ourport', quick ? 200 : 1000], true)
    samples.ourport.push((await d.result).find((m) => m.ns).ns)

    const c = runWorker(['getport', quick ? 200 : 1000], true)
    samples.getport.push((await c.result).find((m) => m.ns).ns)
  }
  destroyShared(region)
  const base = median(samples.numballoc)
  rows.push(['numballoc: allocate() + free() in the worker', base, 1])
  rows.push(['primary hands out numbers over cluster IPC (request + give back)', median(samples.ipc), median(samples.ipc) / base])
  rows.push(['numballoc: await getPort() + releasePort() in the worker (a listen check each)', median(samples.ourport), median(samples.ourport) / base])
  // get-port returns a port a listen check found free, so its peer is numballoc's getPort(), not a bare number.
  rows.push(['get-port: await getPort() in the worker', median(samples.getport), median(samples.getport) / base])
  rows.push(['get-port: await getPort(), ratio to numballoc getPort()', median(samples.getport), median(samples.getport) / median(samples.ourport)])
  return rows
}

/**
 * ConcurrentQueue's pair against ConcurrentBitmap's, each the first allocator of a fresh process
 * (V8 compiles a pair's call for the one native function it has seen; a second allocator in the
 * same process pays for a generic call, which would make whichever ran second look slower).
 * 2,048 numbers, half of them held in both.
 */
/** A JS pair's median time in fresh processes (bench/worker.js `pair`), half the numbers held. */
async function freshPair(kind) {
  const samples = []
  for (let r = 0; r < ROUNDS; r++) {
    // A region per round: without holder records, the numbers a process held stay held after it.
    const { result } = runWorker(['pair', name(`pair-${kind}-${r}`), 2048, quick ? 1e6 : 3e6, kind], false)
    samples.push((await result)[0].ns)
    destroyShared(name(`pair-${kind}-${r}`))
  }
  return median(samples)
}

/**
 * What holder records cost the JS pair: a bitmap with and without them, each in fresh processes
 * with half its numbers held, against the pure-JS floor `floor` measured in the same run.
 */
async function holdersCost(floor) {
  const withHolders = await freshPair('bitmap')
  const without = await freshPair('bare')
  return [
    ['pure-JS Atomics bitmap on a SharedArrayBuffer (in-process floor)', floor, 1],
    ['numballoc allocate() + free(), holder records (the default)', withHolders, withHolders / floor],
    ['numballoc allocate() + free(), `holders: false`', without, without / floor],
  ]
}

async function queueVsBitmap() {
  const bitmap = await freshPair('bitmap')
  const queue = await freshPair('queue')
  return [
    ['ConcurrentBitmap allocate() + free(), half the numbers held', bitmap, 1],
    ['ConcurrentQueue allocate() + free(), half the numbers held', queue, queue / bitmap],
  ]
}

/**
 * Combined allocate+free throughput of 1 and 2 processes, and of 1 and 2 worker threads, churning
 * on one region, by policy; with the floor under any 2-vs-1 figure whose calls all write one or
 * two shared words (FLOORS). Every round measures every row in turn, so that each row sees the
 * machine in the same moods (two cores hand a cache line back and forth fast in some seconds and
 * slowly in others); the last column shows each round's ratio.
 */
async function scaling(policies = ['any', 'lowest', 'cyclic', 'queue']) {
  const { Worker } = require('node:worker_threads')
  const ms = quick ? 300 : 1000
  const start = (kind, args, shared) => {
    if (kind === 'process') return runWorker(args, false)
    const worker = new Worker(path.join(__dirname, 'worker.js'), { argv: args.map(String), workerData: { shared } })
    const messages = []
    worker.on('message', (m) => messages.push(m))
    const result = new Promise((resolve, reject) => worker.on('exit', (code) => (code === 0 ? resolve(messages) : reject(new Error(`worker exited ${code}`)))))
    return { child: worker, result }
  }
  const throughput = async (kind, count, region, policy) => {
    // The shared words of the floors: two, 128 bytes apart (each alone on its cache lines).
    const shared = new SharedArrayBuffer(256)
    const workers = Array.from({ length: count }, () => start(kind, ['churn', region, 16384, ms, policy], shared))
    await Promise.all(workers.map(({ child }) => new Promise((resolve) => child.on('message', (m) => m === 'ready' && resolve()))))
    for (const { child } of workers) kind === 'process' ? child.send('go') : child.postMessage('go')
    const pairs = (await Promise.all(workers.map((w) => w.result))).map((list) => list.find((m) => m.pairs).pairs)
    return pairs.reduce((a, b) => a + b, 0) / (ms / 1000)
  }
  const rows = []
  for (const policy of policies) {
    for (const kind of ['process', 'thread']) rows.push({ policy, kind, one: [], two: [] })
  }
  // Threads only: a SharedArrayBuffer does not cross processes (processes and threads share
  // cache lines alike: see the rows of `any`).
  for (const policy of Object.keys(FLOORS)) rows.push({ policy, kind: 'thread', one: [], two: [] })
  for (let r = 0; r < ROUNDS; r++) {
    for (const row of rows) {
      const region = name(`churn-${row.policy}-${row.kind}`)
      row.one.push(await throughput(row.kind, 1, region, row.policy))
      row.two.push(await throughput(row.kind, 2, region, row.policy))
      destroyShared(region)
    }
  }
  console.log('\n### Two processes or two threads churning on one region (ratio to one)\n')
  console.log('| policy (queue: ConcurrentQueue) | what | 1: pairs per second | 2: combined pairs per second | ratio | each round |')
  console.log('|---|---|---|---|---|---|')
  for (const { policy, kind, one, two } of rows) {
    const what = `${kind}${kind === 'process' ? 'es' : 's'}`
    const rounds = one.map((x, i) => (two[i] / x).toFixed(2)).join(' ')
    console.log(
      `| ${FLOORS[policy] ?? policy} | ${what} | ${(median(one) / 1e6).toFixed(2)} M/s | ${(median(two) / 1e6).toFixed(2)} M/s | ${(median(two) / median(one)).toFixed(2)}× | ${rounds} |`,
    )
  }
}

/** The floors `scaling` measures beside the policies, by the name bench/worker.js knows them by. */
const FLOORS = {
  'floor-one': 'floor: a pair on a region of its own, and an `Atomics.add` on one shared word',
  'floor-two': 'floor: the same, and an `Atomics.add` on each of two shared words',
}

/**
 * examples/test-workers.js's scenario, many rounds: 8 processes started at once each get a port
 * and listen on it. Counts collisions (EADDRINUSE) and the time each getPort() call took.
 */
async function portsUnderRace() {
  const { runRound } = require('../examples/test-workers.js')
  const rounds = quick ? 2 : 20
  const workers = 8
  const pool = name('ports')
  const rows = []
  for (const ask of ['range', 'any']) {
    const results = {}
    for (const impl of ['get-port', 'numballoc']) results[impl] = { collisions: 0, micros: [] }
    for (let r = 0; r < rounds; r++) {
      // Alternate which library goes first, so neither always meets a warmer machine.
      for (const impl of r % 2 ? ['numballoc', 'get-port'] : ['get-port', 'numballoc']) {
        const got = await runRound({ workers, impl, ask, env: { NUMBALLOC_PORT_POOL: pool } })
        results[impl].collisions += got.filter((g) => g.error === 'EADDRINUSE').length
        results[impl].micros.push(...got.map((g) => g.micros))
      }
    }
    const base = median(results['get-port'].micros)
    for (const impl of ['get-port', 'numballoc']) {
      const { collisions, micros } = results[impl]
      const scenario = ask === 'range' ? 'getPort({ port: portNumbers(3000, 3100) })' : 'getPort()'
      rows.push([scenario, impl, `${rounds} × ${workers}`, collisions, median(micros), median(micros) / base])
    }
  }
  destroyShared(pool)
  console.log('\n### Ports for 8 processes started at once (examples/test-workers.js; time ratio to get-port)\n')
  console.log('| call | library | rounds × processes | EADDRINUSE | median time per port | ratio |')
  console.log('|---|---|---|---|---|---|')
  for (const [scenario, impl, runs, collisions, micros, ratio] of rows) {
    console.log(`| \`${scenario}\` | ${impl} | ${runs} | ${collisions} | ${fmt(micros * 1000)} | ${ratio.toFixed(2)}× |`)
  }
}

/**
 * Two Jest runs started at once on one machine, 4 workers each, every test file taking a port
 * (bench/runners/): numballoc, the usual 8000 + JEST_WORKER_ID, and get-port. Counts listens that
 * met EADDRINUSE and the time to choose a port.
 */
async function runnersUnderRace() {
  const fs = require('node:fs')
  const { spawn } = require('node:child_process')
  const rounds = quick ? 2 : 10
  const jest = path.join(__dirname, '..', 'node_modules', '.bin', 'jest')
  const runOnce = (how, out) =>
    new Promise((resolve, reject) => {
      const env = { ...process.env, BENCH_PORTS: how, BENCH_OUT: out, NODE_OPTIONS: '--experimental-vm-modules', NO_COLOR: '1' }
      const child = spawn(jest, ['--config', 'bench/runners/jest.config.js', '--maxWorkers=4'], { cwd: path.join(__dirname, '..'), env, stdio: 'ignore' })
      child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`jest exited ${code}`))))
    })
  console.log('\n### Two Jest runs at once, 4 workers each, a port per test file (bench/runners/)\n')
  console.log('| how a test file gets its port | rounds × runs × files | EADDRINUSE | median time to choose |')
  console.log('|---|---|---|---|')
  const labels = {
    numballoc: 'numballoc `getPort({ port: portNumbers(8000, 8100) })`',
    offset: '`8000 + JEST_WORKER_ID`',
    'get-port': 'get-port `getPort({ port: portNumbers(8000, 8100) })`',
  }
  for (const how of ['numballoc', 'offset', 'get-port']) {
    const out = path.join(require('node:os').tmpdir(), `${name('runners')}-${how}.jsonl`)
    fs.rmSync(out, { force: true })
    for (let r = 0; r < rounds; r++) await Promise.all([runOnce(how, out), runOnce(how, out)])
    const lines = fs
      .readFileSync(out, 'utf8')
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line))
    fs.rmSync(out, { force: true })
    const collisions = lines.filter((l) => l.error === 'EADDRINUSE').length
    console.log(`| ${labels[how]} | ${rounds} × 2 × 4 | ${collisions} | ${fmt(median(lines.map((l) => l.micros)) * 1000)} |`)
  }
}

function print(title, rows, unit = 'ns') {
  console.log(`\n### ${title}\n`)
  console.log(`| what | ${unit === 'ns' ? 'median per call' : 'median'} | ratio |`)
  console.log('|---|---|---|')
  for (const [what, value, ratio] of rows) {
    const shown = unit === 'ns' ? fmt(value) : unit === 'per second' ? `${Math.round(value).toLocaleString('en')}/s` : `${(value / 1e6).toFixed(2)} M/s`
    console.log(`| ${what} | ${shown} | ${ratio.toFixed(2)}× |`)
  }
}

async function main() {
  // Every port taken here comes from a scratch pool, never the user's own.
  process.env.NUMBALLOC_PORT_POOL = name('pool')
  if (process.argv.includes('--only-redis')) {
    // npm run bench -- --only-redis: the Redis backend against its peers alone.
    return redisBench({ quick, rounds: ROUNDS, print })
  }
  if (process.argv.includes('--only-runners')) {
    // npm run bench -- --only-runners: the test-runner scenario alone.
    await runnersUnderRace()
    return destroyShared(process.env.NUMBALLOC_PORT_POOL)
  }
  console.log(`node ${process.version}, ${os.cpus().length} × ${os.cpus()[0].model}, ${ROUNDS} rounds per figure`)
  if (process.argv.includes('--only-pair')) {
    // npm run bench -- --only-pair: the JS pair against the pure-JS floor, with and without holders.
    const pair = pairVsAtomics()
    print('A JS allocate + free pair (ratio to the pure-JS floor)', pair)
    return print('The JS pair with and without holder records, each in a fresh process (ratio to the pure-JS floor)', await holdersCost(pair[0][1]))
  }
  if (process.argv.includes('--only-scaling')) {
    // npm run bench -- --only-scaling: 1 vs 2 processes and threads for every policy, with the floors.
    return scaling()
  }
  if (process.argv.includes('--only-queue')) {
    // npm run bench -- --only-queue: ConcurrentQueue against the bitmap, and 1 vs 2 of it.
    print('The queue against the bitmap: a JS pair, each in a fresh process (ratio to the bitmap)', await queueVsBitmap())
    return scaling(['any', 'queue'])
  }
  const pair = pairVsAtomics()
  print('A JS allocate + free pair (ratio to the pure-JS floor)', pair)
  print('The JS pair with and without holder records, each in a fresh process (ratio to the pure-JS floor)', await holdersCost(pair[0][1]))
  print('The queue against the bitmap: a JS pair, each in a fresh process (ratio to the bitmap)', await queueVsBitmap())
  print('One unique number handed to a worker process (ratio to numballoc)', await perNumberPeers())
  await scaling()
  await portsUnderRace()
  await runnersUnderRace()
  await redisBench({ quick, rounds: ROUNDS, print })
  destroyShared(process.env.NUMBALLOC_PORT_POOL)
}

main().catch((error) => {
  console.error(error)
  process.exit(1)
})
