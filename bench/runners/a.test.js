'use strict'
const { serveOnce } = require('./port.js')

test('a', () => serveOnce())
