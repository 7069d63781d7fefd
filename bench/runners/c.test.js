'use strict'
const { serveOnce } = require('./port.js')

test('c', () => serveOnce())
