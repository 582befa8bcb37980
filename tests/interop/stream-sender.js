'use strict'
// stream-sender.js (--btp ws://user:token@127.0.0.1:PORT | --http URL --token T)
//                  --address A --secret S(base64) --amount N [--timeout S (60)]
// Opens a STREAM connection (ilp-protocol-stream, RFC 29) to A and sends
// exactly N source units, then prints
//   {"sent": "<N>", "delivered": "<destination units>", "sourceAccount": ...}
// and exits 0; exits 1 if fewer than N units could be sent.
const { createConnection } = require('ilp-protocol-stream')
const lib = require('./lib')

async function main () {
  const args = lib.parseArgs()
  lib.installCrashHandlers()
  lib.armTimeout(args, 60)
  const destinationAccount = String(lib.required(args, 'address'))
  const sharedSecret = Buffer.from(String(lib.required(args, 'secret')), 'base64')
  const amount = String(lib.required(args, 'amount'))
  if (!/^[0-9]+$/.test(amount)) lib.fail(`bad --amount ${amount}`)
  const sendMs = Number(args['send-timeout-ms'] || 30000)

  const plugin = lib.makePlugin(args)
  await lib.connectPlugin(plugin, args)
  // createConnection runs IL-DCP for our own address, then a rate probe.
  const conn = await lib.withTimeout(
    createConnection({ plugin, destinationAccount, sharedSecret }),
    15000, 'STREAM connection did not open')
  conn.on('error', (e) => process.stderr.write(`stream-sender: connection error: ${e.message}\n`))
  const stream = conn.createStream()
  await lib.withTimeout(stream.sendTotal(amount), sendMs,
    `sendTotal(${amount}) did not finish within ${sendMs} ms (sent ${stream.totalSent})`)

  const result = {
    sent: stream.totalSent,
    delivered: conn.totalDelivered,
    sourceAccount: conn.sourceAccount,
    destinationAccount
  }
  if (BigInt(stream.totalSent) !== BigInt(amount)) {
    lib.fail(`sent ${stream.totalSent}, wanted exactly ${amount}`, result)
  }
  lib.emit(result)
  // Do not wait for the close handshake: the server side keeps one last
  // frame pending for ~30 s (docs/interop.md). Our Fulfills are all in.
  lib.exitAfterFlush(0)
}

main().catch(lib.fail)
