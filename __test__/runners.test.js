'use strict'
// The real test runners, as users run them (examples/runners/): every test file starts a server
// on a port of its own from numballoc. Two runs of the same runner start at once on this machine,
// sharing one port pool (as two checkouts of a project would share the user's), for several
// rounds: no test may fail, and no listen may meet EADDRINUSE.
const test = require('node:test')
const assert = require('node:assert/strict')
const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const { spawn } = require('node:child_process')
const { scratchName } = require('./helpers')

const root = path.join(__dirname, '..')
const bin = (name) => path.join(root, 'node_modules', '.bin', name)
const runners = {
  'node --test': [process.execPath, ['--test', '--test-concurrency=3', 'examples/runners/node/']],
  'vitest (forks)': [bin('vitest'), ['run', '--config', 'examples/runners/vitest/vitest.config.mjs', '--pool=forks']],
  'vitest (threads)': [bin('vitest'), ['run', '--config', 'examples/runners/vitest/vitest.config.mjs', '--pool=threads']],
  jest: [bin('jest'), ['--config', 'examples/runners/jest/jest.config.js', '--maxWorkers=3']],
  'playwright test (webServer, request)': [bin('playwright'), ['test', '--config', 'examples/runners/playwright/playwright.config.js']],
}
const ROUNDS = 3

function run([command, args], pool) {
  return new Promise((resolve) => {
    const env = { ...process.env, NUMBALLOC_PORT_POOL: pool, CI: '1', FORCE_COLOR: '0', NO_COLOR: '1' }
    delete env.NODE_TEST_CONTEXT // a nested node --test must report on its own
    const child = spawn(command, args, { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    child.stdout.on('data', (d) => (output += d))
    child.stderr.on('data', (d) => (output += d))
    child.on('close', (code, signal) => {
      // Playwright's results directory (examples/runners/playwright: named by its main process).
      fs.rmSync(path.join(os.tmpdir(), `numballoc-playwright-${child.pid}`), { recursive: true, force: true })
      resolve({ code, signal, output })
    })
  })
}

for (const [label, runner] of Object.entries(runners)) {
  test(`${label}: two runs at once, ${ROUNDS} rounds, every test file on a port of its own`, async (t) => {
    const pool = scratchName(t, 'runners')
    for (let round = 0; round < ROUNDS; round++) {
      const results = await Promise.all([run(runner, pool), run(runner, pool)])
      for (const { code, signal, output } of results) {
        assert.doesNotMatch(output, /EADDRINUSE/, `round ${round}: ${output}`)
        assert.equal(signal, null, output)
        assert.equal(code, 0, `round ${round}: ${output}`)
      }
    }
  })
}
