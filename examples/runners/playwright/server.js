'use strict'
// The app under test: serves on the port in PORT.
const http = require('node:http')

const port = Number(process.env.PORT)
http.createServer((request, response) => response.end(`app on ${port}`)).listen(port)
