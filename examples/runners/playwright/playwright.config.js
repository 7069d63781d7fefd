'use strict'
// npx playwright test --config examples/runners/playwright/playwright.config.js
//
// Playwright loads this file in its main process and again in every worker. The port is taken
// once, synchronously, in the main process (getPortSync: a config is evaluated synchronously)
// and handed down in PORT, which the workers and the web server inherit, so it never drifts.
// The main process holds it until the run ends.
const os = require('node:os')
const path = require('node:path')
const { defineConfig } = require('@playwright/test')
const { getPortSync } = require('numballoc')

process.env.PORT ??= String(getPortSync())
// Where results go, also chosen once in the main process (a path per process would leave one
// directory per worker behind).
process.env.PLAYWRIGHT_RESULTS ??= path.join(os.tmpdir(), `numballoc-playwright-${process.pid}`)

module.exports = defineConfig({
  testDir: __dirname,
  testMatch: '*.spec.js',
  workers: 2,
  reporter: 'line',
  outputDir: process.env.PLAYWRIGHT_RESULTS,
  use: { baseURL: `http://127.0.0.1:${process.env.PORT}` },
  webServer: {
    command: `node ${JSON.stringify(path.join(__dirname, 'server.js'))}`,
    url: `http://127.0.0.1:${process.env.PORT}/`,
    reuseExistingServer: false,
  },
})
