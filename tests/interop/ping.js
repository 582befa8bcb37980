'use strict'
// ping.js --btp ws://user:token@127.0.0.1:PORT --destination CONNECTOR_ADDRESS
//         [--amount N (default 0)]
// Echo ping, bidirectional mode (docs/design.md "Echo"): we pick a random
// fulfillment, send a Prepare to the connector's own address whose condition
// is its SHA-256 and whose data is `ECHOECHOECHOECHO ‖ 0x00 ‖
// VarOctetString(our address)`. The connector sends a pong Prepare (same
// condition, data `ECHOECHOECHOECHO ‖ 0x01`) back to our address, which we
// learned over IL-DCP; we fulfill it, and that Fulfill answers the ping.
// Prints {"fulfilled": true, "pongReceived": true, ...} and exits 0, or
// {"fulfilled": false, "reject": {...}} and exits 2.
const crypto = require('crypto')
const IlpPacket = require('ilp-packet')
const ILDCP = require('ilp-protocol-ildcp')
const { Writer } = require('oer-utils')
const lib = require('./lib')

const ECHO_PREFIX = Buffer.from('ECHOECHOECHOECHO', 'ascii')

async function main () {
  const args = lib.parseArgs()
  lib.installCrashHandlers()
  lib.armTimeout(args, 30)
  const destination = String(lib.required(args, 'destination'))
  const amount = String(args.amount || '0')
  const plugin = lib.makePlugin(args)

  const fulfillment = crypto.randomBytes(32)
  const condition = lib.sha256(fulfillment)
  let ownAddress = null
  let pong = null

  // Incoming packets: only the pong for our ping is fulfilled.
  plugin.registerDataHandler(async (data) => {
    let p
    try {
      p = IlpPacket.deserializeIlpPrepare(data)
    } catch (e) {
      return IlpPacket.serializeIlpReject({ code: 'F01', triggeredBy: ownAddress || '', message: 'bad packet', data: Buffer.alloc(0) })
    }
    const isPong = ownAddress !== null &&
      p.destination === ownAddress &&
      p.data.length === 17 &&
      p.data.slice(0, 16).equals(ECHO_PREFIX) &&
      p.data[16] === 1 &&
      p.executionCondition.equals(condition)
    if (!isPong) {
      process.stderr.write(`ping.js: rejecting unexpected Prepare to ${p.destination}\n`)
      return IlpPacket.serializeIlpReject({ code: 'F02', triggeredBy: ownAddress || '', message: 'not our pong', data: Buffer.alloc(0) })
    }
    pong = { amount: p.amount, expiresAt: p.expiresAt.toISOString() }
    return IlpPacket.serializeIlpFulfill({ fulfillment, data: Buffer.alloc(0) })
  })

  await lib.connectPlugin(plugin, args)
  ownAddress = (await ILDCP.fetch(plugin.sendData.bind(plugin))).clientAddress

  const w = new Writer()
  w.write(ECHO_PREFIX)
  w.writeUInt8(0) // type 0 = ping
  w.writeVarOctetString(Buffer.from(ownAddress, 'ascii'))
  const start = process.hrtime.bigint()
  const reply = lib.describeReply(await plugin.sendData(IlpPacket.serializeIlpPrepare({
    amount,
    destination,
    executionCondition: condition,
    expiresAt: new Date(Date.now() + 20000),
    data: w.getBuffer()
  })))
  const rttMs = Number(process.hrtime.bigint() - start) / 1e6

  if (reply.type === 'fulfill') {
    if (reply.fulfillment !== fulfillment.toString('hex')) {
      lib.fail('ping fulfilled with a fulfillment we did not choose', { reply })
    }
    lib.emit({ fulfilled: true, pongReceived: pong !== null, pong, sourceAddress: ownAddress, destination, rttMs })
    lib.exitAfterFlush(0)
  } else if (reply.type === 'reject') {
    lib.emit({
      fulfilled: false,
      pongReceived: pong !== null,
      sourceAddress: ownAddress,
      destination,
      reject: { code: reply.code, triggeredBy: reply.triggeredBy, message: reply.message }
    })
    lib.exitAfterFlush(2)
  } else {
    lib.fail('unexpected reply to ping', { reply })
  }
}

main().catch(lib.fail)
