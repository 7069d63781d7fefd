'use strict'
// npx jest --config examples/runners/jest/jest.config.js
const path = require('node:path')

module.exports = {
  rootDir: path.join(__dirname, '../../..'),
  testMatch: ['<rootDir>/examples/runners/jest/*.test.js'],
  // The package itself, as an app would find it in node_modules.
  moduleNameMapper: { '^numballoc$': '<rootDir>/index.js' },
  testEnvironment: 'node',
}
