// Subscribes to an ssehub stream with the npm `eventsource` package (the
// client Pipedream's docs point to), authenticating with an
// `Authorization: Bearer` header, and prints what it sees as JSON lines:
//
//   {"type":"open"}                                      a connection opened
//   {"type":"message","lastEventId":"…","event":…}       e.lastEventId, JSON.parse(e.data).event
//   {"type":"error","code":401,"message":"…","readyState":2}
//   {"type":"closed","lastEventId":"…"}                  --reopen-after: closed, waiting on stdin
//   {"type":"gap","lastEventId":"…","data":{…}}          an `event: gap` frame (addEventListener)
//
// It exits 0 after --count messages, 2 when the client gives up (an error
// that leaves it CLOSED, e.g. a 401), 3 on --timeout-ms.
//
// A dropped connection is left to the package: it reconnects by itself
// with `Last-Event-ID`. With --reopen-after K the script instead closes the
// EventSource after K messages, prints `closed`, waits for a line on stdin
// (the test emits the events it is to miss meanwhile) and opens a new one
// that resumes from the last id it printed, as a restarted consumer would.
//
// usage: node eventsource.mjs --url URL [--key KEY] --count N
//        [--reopen-after K] [--last-event-id ID] [--timeout-ms MS]

import {once} from 'node:events'
import {parseArgs} from 'node:util'
import {EventSource} from 'eventsource'

const {values: opts} = parseArgs({
  options: {
    url: {type: 'string'},
    key: {type: 'string'},
    count: {type: 'string'},
    'reopen-after': {type: 'string'},
    'last-event-id': {type: 'string'},
    'timeout-ms': {type: 'string', default: '15000'},
  },
})
if (!opts.url || !opts.count) {
  console.error('usage: node eventsource.mjs --url URL [--key KEY] --count N [--reopen-after K] [--last-event-id ID]')
  process.exit(64)
}
const count = Number(opts.count)
const reopenAfter = opts['reopen-after'] === undefined ? Infinity : Number(opts['reopen-after'])

function print(line) {
  process.stdout.write(JSON.stringify(line) + '\n')
}

// This timer also keeps the process alive while the package waits to
// reconnect: it unrefs its own reconnect timer, so with nothing else
// pending Node would exit in the middle of a reconnect.
setTimeout(() => {
  console.error(`eventsource.mjs: timed out with ${received} of ${count} messages`)
  process.exit(3)
}, Number(opts['timeout-ms']))

let received = 0
let lastEventId = opts['last-event-id']

// One EventSource; `resumeFrom` goes out as `Last-Event-ID` on its first
// request. The package sets the header itself on its own reconnects, so
// its value comes after ours and wins.
function open(resumeFrom) {
  const es = new EventSource(opts.url, {
    fetch: (input, init) =>
      fetch(input, {
        ...init,
        headers: {
          ...(resumeFrom ? {'Last-Event-ID': resumeFrom} : {}),
          ...init.headers,
          ...(opts.key ? {Authorization: `Bearer ${opts.key}`} : {}),
        },
      }),
  })
  es.onopen = () => print({type: 'open'})
  // Named events never reach onmessage; the gap signal is one.
  es.addEventListener('gap', (e) => print({type: 'gap', lastEventId: e.lastEventId, data: JSON.parse(e.data)}))
  es.onerror = (e) => {
    print({type: 'error', code: e.code ?? null, message: e.message ?? null, readyState: es.readyState})
    if (es.readyState === EventSource.CLOSED) {
      process.exit(2)
    }
  }
  es.onmessage = (e) => {
    lastEventId = e.lastEventId
    print({type: 'message', lastEventId: e.lastEventId, event: JSON.parse(e.data).event})
    received += 1
    if (received >= count) {
      es.close()
      process.exit(0)
    }
    if (received === reopenAfter) {
      es.close()
      print({type: 'closed', lastEventId})
      reopenWhenTold()
    }
  }
  return es
}

async function reopenWhenTold() {
  process.stdin.setEncoding('utf8')
  await once(process.stdin, 'data')
  process.stdin.pause()
  open(lastEventId)
}

open(lastEventId)
