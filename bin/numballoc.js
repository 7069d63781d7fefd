#!/usr/bin/env node
'use strict'
// The `numballoc` command: see and repair the regions on this machine, and run commands that
// hold numbers. Every command goes through the library's API; nothing here knows the format.

const { spawn } = require('node:child_process')
const os = require('node:os')
const { parseArgs } = require('node:util')
// Loaded when a command needs it, so that help works without the native addon.
let library

/** The library, or, without its native addon, one line that says what to do (not a stack). */
function lib() {
  library ??= load()
  return library
}

function load() {
  try {
    return { ...require('..'), ...require('../lib/ports.js'), ...require('../lib/regions.js') }
  } catch (error) {
    if (error.code !== 'ERR_NATIVE_ADDON_MISSING') throw error
    process.stderr.write(`${error.message}\n`) // it starts with "numballoc"
    process.exit(1)
  }
}

const COMMON = {
  dir: { type: 'string', short: 'd' },
  redis: { type: 'string' },
  json: { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
}

const COMMANDS = {
  list: {
    usage: 'numballoc list [--dir DIR | --redis URL] [--json]',
    summary: 'list the regions on this machine (or the allocators on a Redis server)',
    details: `Lists every numballoc region in POSIX shared memory (/dev/shm), or in DIR: its name,
capacity, numbers in use, processes holding numbers (alive and dead) and the numbers the dead
ones hold (which "numballoc reclaim NAME" frees). With --redis URL, the RedisAllocators on that
server instead: holders are leases, dead once their lease has ended.`,
    positionals: 0,
    run: list,
  },
  inspect: {
    usage: 'numballoc inspect NAME [--dir DIR | --redis URL] [--cells N] [--json]',
    summary: 'counts, holders and a picture of occupancy',
    details: `Shows one region: capacity, numbers in use, every process holding numbers (alive or
dead), and a picture of where the allocated numbers are: one cell per run of numbers, shaded by
how full it is, so fragmentation shows at a glance. --cells sets about how many cells (default
256). Reads the region without changing it; needs only read permission. With --redis URL, the
RedisAllocator NAME on that server: its holders are leases (owner, pid, host, when it ends).`,
    positionals: 1,
    options: { cells: { type: 'string' } },
    run: inspect,
  },
  reclaim: {
    usage: 'numballoc reclaim NAME [--dir DIR | --redis URL] [--json]',
    summary: 'free the numbers of processes that died',
    details: `Frees every number of the region whose holder process is no longer running, and says
how many. Numbers of live processes are never touched. Safe while the region is in use. With
--redis URL, the numbers of the RedisAllocator NAME whose leases have ended.`,
    positionals: 1,
    run: reclaim,
  },
  destroy: {
    usage: 'numballoc destroy NAME [--dir DIR] [--json]',
    summary: 'remove a region',
    details: `Removes the region NAME. Processes that have it open keep working on their mapping;
the next process to open the name gets a fresh, empty region. Refuses objects that are not
numballoc regions.`,
    positionals: 1,
    run: destroy,
  },
  run: {
    usage: 'numballoc run [--port VAR]... [--id VAR=REGION:CAPACITY]... [--dir DIR] -- COMMAND [ARG]...',
    summary: 'run a command that holds ports and IDs, passed in environment variables',
    details: `Takes a port for each --port VAR (from the per-user port pool, as getPort() does; set
NUMBALLOC_PORT_POOL to use another) and the lowest free number of the region REGION (created
for CAPACITY numbers if it does not exist; in DIR with --dir) for each --id VAR=REGION:CAPACITY,
runs COMMAND with them in those environment variables, and gives them back when it exits (even
if it left processes of its own running). While the command runs they are held, even if this
wrapper is killed: the command inherits the holder's lock (as descriptors from 3 on, which it
may ignore but must not close). The exit status is the command's; if a signal ended it, the
wrapper ends with the same signal. Ctrl-C, Ctrl-\\ and a hangup reach the command from the
terminal; a SIGTERM sent to the wrapper is passed on. Options after -- are the command's.

Example: numballoc run --port PORT --id WORKER_ID=ids:64 -- npm start`,
    positionals: 'command',
    options: { port: { type: 'string', multiple: true }, id: { type: 'string', multiple: true } },
    run: runCommand,
  },
}

const HELP = `numballoc: unique numbers across processes, from shared memory

Usage: numballoc COMMAND [options]

Commands:
${Object.entries(COMMANDS)
  .map(([name, c]) => `  ${name.padEnd(9)}${c.summary}`)
  .join('\n')}

Options:
  -d, --dir DIR  regions kept as files in DIR instead of POSIX shared memory
  --redis URL    list, inspect, reclaim: the allocators on a Redis server instead
  --json         print JSON for scripts
  -h, --help     help (also "numballoc COMMAND --help")
`

/** An error to print as one line with a non-zero exit status: 1, or 2 for a wrong command line. */
class Failure extends Error {
  constructor(message, code, status = 1) {
    super(message)
    this.code = code
    this.status = status
  }

  /**
   * A library error as a Failure. Every argument the command passes on comes from its command
   * line, so one the library refuses is a wrong command line (status 2).
   */
  static of(error, message = error.message) {
    return new Failure(message, error.code, ARGUMENT_ERRORS.has(error.code) ? 2 : 1)
  }
}

const ARGUMENT_ERRORS = new Set(['ERR_INVALID_NAME', 'ERR_OUT_OF_RANGE', 'ERR_INVALID_ARG_TYPE', 'ERR_INVALID_ARG_VALUE', 'ERR_INVALID_URL'])

async function main(argv) {
  const [name, ...rest] = argv
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    const topic = name === 'help' && COMMANDS[rest[0]]
    process.stdout.write(topic ? commandHelp(topic) : HELP)
    return 0
  }
  const command = COMMANDS[name]
  if (!command) throw new Failure(`unknown command '${name}' (see numballoc --help)`, 'ERR_USAGE', 2)
  let parsed
  try {
    parsed = parseArgs({ args: rest, options: { ...COMMON, ...command.options }, allowPositionals: true, tokens: true })
  } catch (error) {
    throw new Failure(`${error.message} (see numballoc ${name} --help)`, 'ERR_USAGE', 2)
  }
  const { values, positionals, tokens } = parsed
  if (values.help) {
    process.stdout.write(commandHelp(command))
    return 0
  }
  if (command.positionals === 'command') {
    // The command's own options must never be taken for ours: it comes after '--'.
    const terminator = tokens.findIndex((token) => token.kind === 'option-terminator')
    const first = tokens.findIndex((token) => token.kind === 'positional')
    if (positionals.length === 0 || terminator < 0 || first < terminator) {
      throw new Failure(`${name} needs -- before the COMMAND (usage: ${command.usage})`, 'ERR_USAGE', 2)
    }
    return command.run(positionals, values)
  }
  if (positionals.length !== command.positionals) {
    const wanted = command.positionals === 0 ? 'no arguments' : 'a region NAME'
    throw new Failure(`${name} takes ${wanted} (usage: ${command.usage})`, 'ERR_USAGE', 2)
  }
  let run = command.run
  if (values.redis !== undefined) {
    run = REDIS_COMMANDS[name]
    if (!run) throw new Failure(`${name} does not take --redis (usage: ${command.usage})`, 'ERR_USAGE', 2)
    if (values.dir !== undefined) throw new Failure('--dir and --redis name different places: give one', 'ERR_USAGE', 2)
  }
  const result = await run(positionals[0], values)
  process.stdout.write(values.json ? `${JSON.stringify(result.json, jsonValue, 2)}\n` : result.text)
  return 0
}

function commandHelp(command) {
  return `Usage: ${command.usage}\n\n${command.details}\n`
}

function jsonValue(_key, value) {
  return typeof value === 'bigint' ? `0x${value.toString(16)}` : value
}

function regionOptions(values) {
  return values.dir === undefined ? {} : { directory: values.dir }
}

/** Runs a library call on region `name`, turning its errors into one clear line. */
function onRegion(name, values, call) {
  try {
    return call()
  } catch (error) {
    const where = values.dir === undefined ? '' : ` in ${values.dir}`
    switch (error.code) {
      case 'ENOENT':
        if (name === '') throw new Failure(`no directory ${values.dir ?? '/dev/shm'}`, error.code)
        throw new Failure(`no region named '${name}'${where}`, error.code)
      case 'EACCES':
      case 'EPERM':
        throw new Failure(`permission denied: region '${name}'${where} (${error.path ?? name})`, error.code)
      default:
        throw Failure.of(error)
    }
  }
}

/** `part` of `whole` as a percentage that is never 0 for a non-zero part, nor 100 short of all. */
function percent(part, whole) {
  const value = (100 * part) / whole
  if (part > 0 && value < 0.1) return '<0.1%'
  if (part < whole && value > 99.9) return '>99.9%'
  return `${value.toFixed(1)}%`
}

function describeKind(report) {
  const range = lib().portRangeOfTag(report.tag)
  if (range) return `ports ${range.from}-${range.to}`
  return `${report.kind === 'queue' ? 'queue of ' : ''}numbers 0-${report.capacity - 1}`
}

/** How many numbers the region's users hand out: a pool's ports, else its whole capacity. */
function usable(report) {
  const range = lib().portRangeOfTag(report.tag)
  return range ? Math.min(range.to - range.from + 1, report.capacity) : report.capacity
}

function summary(report) {
  const alive = report.holders.filter((h) => h.alive)
  return {
    name: report.name,
    path: report.path,
    kind: describeKind(report),
    allocator: report.kind,
    capacity: usable(report),
    inUse: report.inUse,
    tracksHolders: report.tracksHolders,
    holdersAlive: alive.length,
    holdersDead: report.holders.length - alive.length,
    heldByDead: report.heldByDead,
    ...(report.queue ? { waiting: report.queue.waiting } : {}),
  }
}

function list(_name, values) {
  const names = onRegion('', values, () => lib().listShared(regionOptions(values)))
  const rows = names.map((name) => {
    try {
      return summary(lib().inspectShared(name, { ...regionOptions(values), cells: 1 }))
    } catch (error) {
      return { name, error: { code: error.code, message: error.message } }
    }
  })
  if (rows.length === 0) return { json: rows, text: `no numballoc regions in ${values.dir ?? '/dev/shm'}\n` }
  const header = ['NAME', 'HOLDS', 'CAPACITY', 'IN USE', 'ALIVE', 'DEAD', 'HELD BY DEAD']
  const table = rows.map((r) =>
    r.error
      ? [r.name, `unreadable: ${r.error.message}`]
      : [
          r.name,
          r.kind,
          r.capacity,
          r.inUse,
          r.tracksHolders ? r.holdersAlive : '-',
          r.tracksHolders ? r.holdersDead : '-',
          r.tracksHolders ? r.heldByDead : '-',
        ],
  )
  return { json: rows, text: formatTable([header, ...table]) }
}

function formatTable(rows) {
  const widths = []
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, String(cell).length)))
  return rows.map((row) => row.map((cell, i) => (i === row.length - 1 ? String(cell) : String(cell).padEnd(widths[i]))).join('  ')).join('\n') + '\n'
}

// Shades for a cell's fill: empty, up to a quarter, up to a half, less than full, full.
const SHADES = ['·', '░', '▒', '▓', '█']
const ROW_CELLS = 64

function shade(used, size) {
  if (used === 0) return SHADES[0]
  if (used >= size) return SHADES[4]
  const fill = used / size
  return fill <= 0.25 ? SHADES[1] : fill <= 0.5 ? SHADES[2] : SHADES[3]
}

function cellsOption(values) {
  if (values.cells === undefined) return 256
  // Digits only: Number() would also take '1e3', '0x10' and ' 5'.
  const cells = /^[0-9]+$/.test(values.cells) ? Number(values.cells) : NaN
  if (!Number.isInteger(cells) || cells < 1 || cells > 65536) {
    throw new Failure(`--cells must be an integer from 1 to 65536, got '${values.cells}'`, 'ERR_USAGE', 2)
  }
  return cells
}

/** The occupancy picture of `report`'s cells: `capacity` usable numbers, the first labelled `first`. */
function occupancy(report, capacity, first, unit) {
  const lines = [
    `occupancy (one cell = ${report.cellSize} ${unit}${report.cellSize === 1 ? '' : 's'}: ${SHADES[0]} empty, ${SHADES[1]} <=25%, ${SHADES[2]} <=50%, ${SHADES[3]} <100%, ${SHADES[4]} full)`,
  ]
  const labelWidth = String(first + capacity - 1).length
  // Cells past the usable numbers (a pool's padding to whole bytes) are left out.
  const shown = report.cells.slice(0, Math.ceil(capacity / report.cellSize))
  for (let row = 0; row < shown.length; row += ROW_CELLS) {
    const picture = shown
      .slice(row, row + ROW_CELLS)
      .map((used, i) => shade(used, Math.min(report.cellSize, capacity - (row + i) * report.cellSize)))
      .join('')
    lines.push(`  ${String(first + row * report.cellSize).padStart(labelWidth)} ${picture}`)
  }
  return lines
}

function inspect(name, values) {
  const cells = cellsOption(values)
  const report = onRegion(name, values, () => lib().inspectShared(name, { ...regionOptions(values), cells }))
  const range = lib().portRangeOfTag(report.tag)
  const first = range ? range.from : 0
  const capacity = usable(report)
  const pct = percent(report.inUse, capacity)
  const lines = [
    `region    ${report.name} (${report.path})`,
    `holds     ${describeKind(report)}${range ? ' (a port pool)' : ''}`,
    `capacity  ${capacity} ${range ? 'ports' : 'numbers'} (${report.queue ? 'a first-in first-out queue' : `${report.size}-byte bitmap`}, ${report.tracksHolders ? 'with' : 'without'} holder records)`,
    `in use    ${report.inUse} (${pct})`,
  ]
  if (report.queue) {
    const { waiting, next, stranded } = report.queue
    const more = waiting > next.length ? ', ...' : ''
    let line = `waiting   ${waiting}${waiting > 0 ? `, next out first: ${next.join(', ')}${more}` : ''}`
    if (stranded > 0) line += ` (${stranded} stranded by a holder that stopped mid-call: taken next)`
    lines.push(line)
  }
  if (report.tracksHolders) {
    const alive = report.holders.filter((h) => h.alive).length
    const dead = report.holders.length - alive
    let holders = `holders   ${report.holders.length} process${report.holders.length === 1 ? '' : 'es'}: ${alive} alive, ${dead} dead`
    if (dead > 0) holders += ` holding ${report.heldByDead} (numballoc reclaim ${name} frees them)`
    lines.push(holders)
    if (report.holders.length > 0) {
      lines.push('', formatTable([['  PID', 'HOLDS', 'STATE'], ...report.holders.map((h) => [`  ${h.pid}`, h.count, h.alive ? 'alive' : 'dead'])]).trimEnd())
    }
  } else {
    lines.push('holders   not recorded (the region was created with holders: false)')
  }
  lines.push('', ...occupancy(report, capacity, first, range ? 'port' : 'number'))
  return {
    json: {
      ...summary(report),
      ...(range ?? {}),
      holders: report.holders,
      cells: report.cells,
      cellSize: report.cellSize,
      ...(report.queue ? { queue: report.queue } : {}),
    },
    text: `${lines.join('\n')}\n`,
  }
}

function reclaim(name, values) {
  const reclaimed = onRegion(name, values, () => ({
    tracksHolders: lib().inspectShared(name, { ...regionOptions(values), cells: 1 }).tracksHolders,
    count: lib().reclaimShared(name, regionOptions(values)),
  }))
  const text = reclaimed.tracksHolders
    ? `reclaimed ${reclaimed.count} number${reclaimed.count === 1 ? '' : 's'} held by dead processes in '${name}'\n`
    : `'${name}' does not record holders (created with holders: false): nothing to reclaim\n`
  return { json: { name, reclaimed: reclaimed.count, tracksHolders: reclaimed.tracksHolders }, text }
}

const VARIABLE = /^[A-Za-z_][A-Za-z0-9_]*$/

function checkVariable(variable, flag) {
  if (!VARIABLE.test(variable)) throw new Failure(`${flag} needs an environment variable name, got '${variable}'`, 'ERR_USAGE', 2)
}

/**
 * `numballoc run`: takes the numbers, runs the command with them, gives them back when it exits.
 * Returns undefined: the exit status is set when the command ends.
 */
function runCommand([file, ...args], values) {
  const env = { ...process.env }
  const allocators = []
  const giveBack = []
  const specs = (values.id ?? []).map((spec) => {
    const match = /^([^=]+)=([^:]+):(\d+)$/.exec(spec)
    if (!match) throw new Failure(`--id takes VAR=REGION:CAPACITY, got '${spec}'`, 'ERR_USAGE', 2)
    checkVariable(match[1], '--id')
    return match.slice(1)
  })
  const variables = [...specs.map(([variable]) => variable), ...(values.port ?? [])]
  const twice = variables.find((variable, i) => variables.indexOf(variable) !== i)
  if (twice) throw new Failure(`${twice} is given twice`, 'ERR_USAGE', 2)
  for (const [variable, region, capacity] of specs) {
    const ids = onRegion(region, values, () => lib().ConcurrentBitmap.open(region, { ...regionOptions(values), capacity: Number(capacity), policy: 'lowest' }))
    const n = onRegion(region, values, () => {
      const got = ids.tryAllocate()
      if (got === null) throw new Failure(`no free number in '${region}' for ${variable}: all ${ids.max} are held`, 'ERR_NO_FREE_NUMBER')
      return got
    })
    env[variable] = String(n)
    allocators.push(ids)
    giveBack.push(() => ids.free(n))
  }
  for (const variable of values.port ?? []) {
    checkVariable(variable, '--port')
    const pool = onRegion('', {}, () => lib().defaultPortPool())
    const port = onRegion(pool.name, {}, () => pool.getPortSync())
    env[variable] = String(port)
    allocators.push(lib().poolBitmap(pool))
    giveBack.push(() => pool.release(port))
  }
  // The descriptors holding the holders' locks, inherited by the command (from fd 3 on): while
  // it lives, the locks do, so its numbers stay held even if this process is killed.
  const fds = [...new Set(allocators.map(lib().holderFd).filter((fd) => fd >= 0))]
  // Signals, as system(3) has it: Ctrl-C, Ctrl-\\ and a terminal's hangup reach the command
  // directly (it is in this process group), so the wrapper only outlives them; a SIGTERM sent
  // to the wrapper alone is passed on. Installed before the command starts, so no signal finds
  // the wrapper without them.
  let child
  const handlers = {
    SIGINT: () => {},
    SIGQUIT: () => {},
    SIGHUP: () => {},
    SIGTERM: () => child?.kill('SIGTERM'),
  }
  for (const [signal, handler] of Object.entries(handlers)) process.on(signal, handler)
  child = spawn(file, args, { env, stdio: ['inherit', 'inherit', 'inherit', ...fds] })
  child.on('error', (error) => {
    for (const each of giveBack) each()
    process.stderr.write(`numballoc: cannot run '${file}': ${error.message}\n`)
    process.exitCode = error.code === 'ENOENT' ? 127 : 126
  })
  child.on('exit', (code, signal) => {
    for (const [name, handler] of Object.entries(handlers)) process.off(name, handler)
    // Given back when the command exits, even if it left processes of its own running.
    for (const each of giveBack) each()
    if (signal) {
      // Ended by a signal: end the same way, so a shell sees it (a loop stops on Ctrl-C).
      process.kill(process.pid, signal)
      process.exitCode = 128 + (os.constants.signals[signal] ?? 0) // for signals that do not end it
    } else {
      process.exitCode = code
    }
  })
  return undefined
}

function destroy(name, values) {
  // destroyShared itself refuses anything that is not a numballoc region (finished, cut short or
  // unfinished), FIFOs and symbolic links included.
  const existed = onRegion(name, values, () => lib().destroyShared(name, regionOptions(values)))
  if (!existed) throw new Failure(`no region named '${name}'`, 'ENOENT')
  return { json: { name, destroyed: true }, text: `destroyed '${name}'\n` }
}

// --redis URL: the same commands for the RedisAllocators on a server.

/** A URL as the command shows it: without a password. */
function redacted(url) {
  return require('../lib/resp.js').redacted(url)
}

/** Runs a library call on Redis allocator `name`, turning its errors into one clear line. */
async function onServer(name, values, call) {
  try {
    return await call({ redis: values.redis })
  } catch (error) {
    if (error.code === 'ENOENT') throw new Failure(`no allocator named '${name}' on ${redacted(values.redis)}`, error.code)
    throw Failure.of(error)
  }
}

function redisSummary(report) {
  const alive = report.holders.filter((h) => h.alive)
  return {
    name: report.name,
    kind: `numbers 0-${report.capacity - 1} (${report.policy})`,
    allocator: 'redis',
    capacity: report.capacity,
    inUse: report.inUse,
    holdersAlive: alive.length,
    holdersDead: report.holders.length - alive.length,
    heldByDead: report.heldByDead,
  }
}

async function listRedis(_name, values) {
  const names = await onServer('', values, (options) => lib().listRedis(options))
  const rows = []
  for (const name of names) {
    try {
      rows.push(redisSummary(await lib().inspectRedis(name, { redis: values.redis, cells: 1 })))
    } catch (error) {
      rows.push({ name, error: { code: error.code, message: error.message } })
    }
  }
  if (rows.length === 0) return { json: rows, text: `no numballoc allocators on ${redacted(values.redis)}\n` }
  const header = ['NAME', 'HOLDS', 'CAPACITY', 'IN USE', 'ALIVE', 'DEAD', 'HELD BY DEAD']
  const table = rows.map((r) =>
    r.error ? [r.name, `unreadable: ${r.error.message}`] : [r.name, r.kind, r.capacity, r.inUse, r.holdersAlive, r.holdersDead, r.heldByDead],
  )
  return { json: rows, text: formatTable([header, ...table]) }
}

async function inspectRedis(name, values) {
  const cells = cellsOption(values)
  const report = await onServer(name, values, (options) => lib().inspectRedis(name, { ...options, cells }))
  const alive = report.holders.filter((h) => h.alive).length
  const dead = report.holders.length - alive
  const lines = [
    `allocator ${report.name} on ${redacted(values.redis)}`,
    `holds     numbers 0-${report.capacity - 1}, policy ${report.policy}`,
    `in use    ${report.inUse} (${percent(report.inUse, report.capacity)})`,
    `tokens    ${report.token} handed out`,
    `holders   ${report.holders.length} lease${report.holders.length === 1 ? '' : 's'}: ${alive} alive, ${dead} ended` +
      (dead > 0 ? ` holding ${report.heldByDead} (the next allocation, or numballoc reclaim ${name} --redis URL, frees them)` : ''),
  ]
  if (report.holders.length > 0) {
    const ends = (h) => `${h.alive ? 'ends in' : 'ended'} ${Math.abs(h.expiresAt - report.now)} ms${h.alive ? '' : ' ago'}`
    lines.push(
      '',
      formatTable([['  OWNER', 'PID', 'HOST', 'HOLDS', 'LEASE'], ...report.holders.map((h) => [`  ${h.owner}`, h.pid, h.host, h.count, ends(h)])]).trimEnd(),
    )
  }
  lines.push('', ...occupancy(report, report.capacity, 0, 'number'))
  return {
    json: { ...redisSummary(report), policy: report.policy, token: report.token, holders: report.holders, cells: report.cells, cellSize: report.cellSize },
    text: `${lines.join('\n')}\n`,
  }
}

async function reclaimRedis(name, values) {
  const freed = await onServer(name, values, (options) => lib().reclaimRedis(name, options))
  return { json: { name, reclaimed: freed }, text: `reclaimed ${freed} number${freed === 1 ? '' : 's'} of '${name}'\n` }
}

const REDIS_COMMANDS = { list: listRedis, inspect: inspectRedis, reclaim: reclaimRedis }

// A reader that stops early (`numballoc list --json | head -c 10`) is not an error of ours.
process.stdout.on('error', (error) => {
  if (error.code !== 'EPIPE') throw error
  process.exit(process.exitCode ?? 0)
})

main(process.argv.slice(2)).then(
  (status) => {
    // `run` sets the status itself, when its command exits.
    if (typeof status === 'number') process.exitCode = status
  },
  (error) => {
    if (!(error instanceof Failure)) throw error
    const json = process.argv.includes('--json')
    process.stderr.write(json ? `${JSON.stringify({ error: { code: error.code, message: error.message } })}\n` : `numballoc: ${error.message}\n`)
    process.exitCode = error.status
  },
)
