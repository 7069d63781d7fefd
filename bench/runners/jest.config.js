'use strict'
// bench/index.js's runner scenario (see port.js).
const path = require('node:path')

module.exports = {
  rootDir: path.join(__dirname, '../..'),
  testMatch: ['<rootDir>/bench/runners/*.test.js'],
  moduleNameMapper: { '^numballoc$': '<rootDir>/index.js' },
  testEnvironment: 'node',
  transform: {}, // plain CommonJS: nothing to compile, and the same for every way of choosing
}
