'use strict'
// spsp-server.js --btp ws://user:token@127.0.0.1:PORT [--receive-max N]
//                [--timeout S (300)] [--no-stdin]
// An ilp-protocol-stream server (RFC 29) behind a client plugin, with an
// SPSP endpoint (RFC 9) on 127.0.0.1 that answers every GET with a fresh
// generateAddressAndSecret(), as ilp-spsp-server does: one STREAM connection
// per query. Every stream gets receive max N (default unlimited). Prints
//   {"spsp": "http://127.0.0.1:PORT/.well-known/pay", "assetCode", "assetScale"}
// once listening, {"received": "<total>"} each time money arrives, and
//   {"final": true, "received": "<total>", "connections", "spspQueries"}
// when stdin closes (unless --no-stdin) or on SIGTERM/SIGINT, exiting 0.
const http = require('http')
const { createServer } = require('ilp-protocol-stream')
const lib = require('./lib')

let total = 0n
let connections = 0
let spspQueries = 0

function finish (code) {
  lib.emit({ final: true, received: total.toString(), connections, spspQueries })
  lib.exitAfterFlush(code)
}

async function main () {
  const args = lib.parseArgs()
  lib.installCrashHandlers()
  lib.armTimeout(args, 300, () => lib.emit({ final: true, received: total.toString(), timedOut: true }))
  process.on('SIGTERM', () => finish(0))
  process.on('SIGINT', () => finish(0))
  let receiveMax = Infinity
  if (args['receive-max'] !== undefined) {
    if (!/^[0-9]+$/.test(String(args['receive-max']))) lib.fail(`bad --receive-max ${args['receive-max']}`)
    receiveMax = String(args['receive-max'])
  }

  const plugin = lib.makePlugin(args)
  await lib.connectPlugin(plugin, args)
  // createServer connects the plugin (already done) and runs IL-DCP.
  const server = await lib.withTimeout(createServer({ plugin }), 10000, 'STREAM server did not start (IL-DCP?)')
  server.on('connection', (conn) => {
    connections++
    conn.on('stream', (stream) => {
      stream.setReceiveMax(receiveMax)
      stream.on('money', (amount) => {
        total += BigInt(amount)
        lib.emit({ received: total.toString() })
      })
    })
    conn.on('error', (e) => process.stderr.write(`spsp-server: connection error: ${e.message}\n`))
  })

  const web = http.createServer((req, res) => {
    spspQueries++
    const { destinationAccount, sharedSecret } = server.generateAddressAndSecret()
    const body = JSON.stringify({ destination_account: destinationAccount, shared_secret: sharedSecret.toString('base64') })
    res.writeHead(200, {
      'Content-Type': 'application/spsp4+json',
      'Cache-Control': 'no-store',
      'Content-Length': Buffer.byteLength(body)
    })
    res.end(body)
  })
  web.on('error', lib.fail)
  web.listen(0, '127.0.0.1', () => {
    lib.emit({
      spsp: `http://127.0.0.1:${web.address().port}/.well-known/pay`,
      assetCode: server.assetCode,
      assetScale: server.assetScale
    })
  })

  if (!args['no-stdin']) {
    process.stdin.on('end', () => finish(0))
    process.stdin.on('error', () => finish(0))
    process.stdin.resume()
  }
}

main().catch(lib.fail)
