'use strict'
// peer-balance.js --btp ws://user:token@127.0.0.1:PORT   (or --http ...)
// Sends a Prepare (amount 0) to `peer.balance` with the peer-protocol
// condition (docs/design.md "peer.balance") and prints
//   {"balance": "<signed Int64 as decimal string>"}   exit 0, or
//   {"reject": {code, triggeredBy, message}}          exit 2.
const IlpPacket = require('ilp-packet')
const lib = require('./lib')

async function main () {
  const args = lib.parseArgs()
  lib.installCrashHandlers()
  lib.armTimeout(args, 30)
  const plugin = lib.makePlugin(args)
  await lib.connectPlugin(plugin, args)
  const prepare = IlpPacket.serializeIlpPrepare({
    amount: '0',
    destination: 'peer.balance',
    executionCondition: lib.PEER_PROTOCOL_CONDITION,
    expiresAt: new Date(Date.now() + 30000),
    data: Buffer.alloc(0)
  })
  const reply = lib.describeReply(await plugin.sendData(prepare))
  if (reply.type === 'fulfill') {
    const data = Buffer.from(reply.data, 'hex')
    if (data.length !== 8) lib.fail(`peer.balance Fulfill data is ${data.length} bytes, want 8`, { reply })
    if (reply.fulfillment !== lib.PEER_PROTOCOL_FULFILLMENT.toString('hex')) {
      lib.fail('peer.balance Fulfill does not carry the peer-protocol fulfillment', { reply })
    }
    // Signed Int64, big-endian two's complement
    // (RFC 30 "Fixed-length signed integers").
    lib.emit({ balance: data.readBigInt64BE(0).toString() })
    lib.exitAfterFlush(0)
  } else if (reply.type === 'reject') {
    lib.emit({ reject: { code: reply.code, triggeredBy: reply.triggeredBy, message: reply.message } })
    lib.exitAfterFlush(2)
  } else {
    lib.fail('unexpected reply to peer.balance', { reply })
  }
}

main().catch(lib.fail)
