'use strict'
// stream-receiver.js --btp ws://user:token@127.0.0.1:PORT [--timeout S (300)]
//                    [--no-stdin]
// A STREAM server (ilp-protocol-stream, RFC 29) behind a client plugin. The
// server gets its address from the connector over IL-DCP. Prints
//   {"address": "...", "secret": "<base64>", "assetCode", "assetScale"}
// as soon as it listens, then {"received": "<total>"} each time money
// arrives, and finally {"final": true, "received": "<total>"} when stdin is
// closed (unless --no-stdin) or on SIGTERM/SIGINT, exiting 0.
const { createServer } = require('ilp-protocol-stream')
const lib = require('./lib')

let total = 0n
let connections = 0
let packets = 0

function finish (code) {
  lib.emit({ final: true, received: total.toString(), connections, moneyEvents: packets })
  lib.exitAfterFlush(code)
}

async function main () {
  const args = lib.parseArgs()
  lib.installCrashHandlers()
  lib.armTimeout(args, 300, () => lib.emit({ final: true, received: total.toString(), timedOut: true }))
  process.on('SIGTERM', () => finish(0))
  process.on('SIGINT', () => finish(0))

  const plugin = lib.makePlugin(args)
  await lib.connectPlugin(plugin, args)
  // createServer connects the plugin (already done) and runs IL-DCP.
  const server = await lib.withTimeout(createServer({ plugin }), 10000, 'STREAM server did not start (IL-DCP?)')

  server.on('connection', (conn) => {
    connections++
    conn.on('stream', (stream) => {
      stream.setReceiveMax(Infinity)
      stream.on('money', (amount) => {
        total += BigInt(amount)
        packets++
        lib.emit({ received: total.toString() })
      })
    })
    conn.on('error', (e) => process.stderr.write(`stream-receiver: connection error: ${e.message}\n`))
  })

  const { destinationAccount, sharedSecret } = server.generateAddressAndSecret()
  lib.emit({
    address: destinationAccount,
    secret: sharedSecret.toString('base64'),
    assetCode: server.assetCode,
    assetScale: server.assetScale
  })

  if (!args['no-stdin']) {
    process.stdin.on('end', () => finish(0))
    process.stdin.on('error', () => finish(0))
    process.stdin.resume()
  }
}

main().catch(lib.fail)
