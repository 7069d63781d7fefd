'use strict'
const { serveOnce } = require('./port.js')

test('b', () => serveOnce())
