'use strict'
// The public API. Each module's calls are documented in index.d.ts.

const regions = require('./lib/regions.js')
const { Lease } = require('./lib/lease.js')
const { PortPool, getPort, releasePort, portNumbers } = require('./lib/ports.js')

module.exports = { ...regions, Lease, PortPool, getPort, releasePort, portNumbers }
