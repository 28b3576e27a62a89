// Drive the real @segment/analytics-node SDK against a Seamline server.
//
//   node send.mjs <host> <writeKey> <count>
//
// Sends <count> events (cycling through every call type) with small batches, waits
// for closeAndFlush(), then prints one JSON line on stdout:
//   {"messageIds": [...], "statuses": [...], "errors": [...]}
// where statuses are the HTTP statuses of every upload the SDK made.
import { Analytics } from '@segment/analytics-node'

const [host, writeKey, countArg] = process.argv.slice(2)
if (!host || !writeKey) {
  process.stderr.write('usage: node send.mjs <host> <writeKey> <count>\n')
  process.exit(2)
}
const count = Number(countArg ?? 20)

const analytics = new Analytics({
  writeKey,
  host,
  flushAt: 7,
  flushInterval: 200,
  maxRetries: 2,
  httpRequestTimeout: 10000,
})

const statuses = []
const errors = []
const messageIds = []
analytics.on('http_response', (response) => statuses.push(response.status))
analytics.on('error', (err) => {
  errors.push(String(err?.reason ?? err?.message ?? JSON.stringify(err)))
})

const done = (err, ctx) => {
  if (err) errors.push(String(err?.reason ?? err?.message ?? err))
  else if (ctx) messageIds.push(ctx.event.messageId)
}

for (let i = 0; i < count; i++) {
  const userId = `node-user-${i % 5}`
  switch (i % 6) {
    case 0:
      analytics.track({ userId, event: 'Order Completed', properties: { i, total: 9.5 } }, done)
      break
    case 1:
      analytics.identify({ userId, traits: { plan: 'pro', i } }, done)
      break
    case 2:
      analytics.page({ anonymousId: `node-anon-${i}`, name: 'Home', category: 'Docs' }, done)
      break
    case 3:
      analytics.screen({ userId, name: 'Basket', properties: { i } }, done)
      break
    case 4:
      analytics.group({ userId, groupId: `node-group-${i % 3}`, traits: { i } }, done)
      break
    default:
      analytics.alias({ userId, previousId: `node-anon-${i}` }, done)
  }
}

await analytics.closeAndFlush({ timeout: 30000 })
process.stdout.write(JSON.stringify({ messageIds, statuses, errors }) + '\n')
