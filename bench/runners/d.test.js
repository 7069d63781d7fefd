'use strict'
const { serveOnce } = require('./port.js')

test('d', () => serveOnce())
