// ssehub inspector: the sources of an account, and one source's events
// live. No framework; every payload is rendered as text (textContent,
// text nodes), never as HTML. The stream is read with a short-lived
// subscribe token, never with the API key in a URL.
'use strict'

const KEY = 'ssehub.key'
const MAX_ROWS = 500
/** Sources asked for per page of the listing (the server's default). */
const PAGE = 100
// Token life in seconds (?token_s= shortens it, for tests), renewed at 80 %.
const TOKEN_S = Math.max(3, Number(new URLSearchParams(location.search).get('token_s')) || 300)

// Where the server is as this page reached it: '' at the root, or the
// path a reverse proxy serves it under ('/ssehub' for /ssehub/ui), read
// from this script's own URL; every call and link goes through it (the
// URLs the API returns are for others: they come from Host or --public-url).
const ROOT = new URL(document.currentScript.src).pathname.replace(/\/ui\/app\.js$/, '')

const $ = (id) => document.getElementById(id)
const main = $('main')
let key = sessionStorage.getItem(KEY)
let view = null // the current view: its stop() runs when the page changes

// An element: attributes (on* are listeners), then children as nodes or text.
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag)
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v)
    else if (k === 'class') el.className = v
    else if (v === true) el.setAttribute(k, '')
    else if (v != null && v !== false) el.setAttribute(k, v)
  }
  for (const kid of kids.flat()) if (kid != null && kid !== false) el.append(kid)
  return el
}

function toast(text) {
  const t = $('toast')
  t.textContent = text
  t.hidden = false
  clearTimeout(toast.timer)
  toast.timer = setTimeout(() => (t.hidden = true), 2200)
}

async function copy(text, what) {
  try {
    await navigator.clipboard.writeText(text)
  } catch {
    const area = h('textarea', {class: 'offscreen'})
    area.value = text
    document.body.append(area)
    area.select()
    document.execCommand('copy')
    area.remove()
  }
  toast(`Copied ${what}`)
}

const copyButton = (text, what) => h('button', {type: 'button', class: 'small', title: `Copy ${what}`, onclick: () => copy(text, what)}, 'Copy')

// ---- the key, and the API ----

let asking = null
function askKey(message) {
  if (!asking) {
    asking = new Promise((resolve) => {
      $('keyerr').textContent = message || ''
      $('keyerr').hidden = !message
      $('keybox').hidden = false
      $('keyinput').value = ''
      $('keyinput').focus()
      $('keyform').onsubmit = (e) => {
        e.preventDefault()
        const k = $('keyinput').value.trim()
        if (!k) return
        $('keybox').hidden = true
        asking = null
        resolve(k)
      }
    })
  }
  return asking
}

// A call with the key: JSON in and out; asks for the key again on 401.
async function api(method, path, body) {
  for (;;) {
    if (!key) {
      key = await askKey()
      sessionStorage.setItem(KEY, key)
    }
    $('forget').hidden = false
    const init = {method, headers: {Authorization: `Bearer ${key}`}}
    if (body !== undefined) {
      init.body = typeof body === 'string' ? body : JSON.stringify(body)
      init.headers['Content-Type'] = 'application/json'
    }
    const res = await fetch(ROOT + path, init)
    const text = await res.text()
    let json = null
    try {
      json = text ? JSON.parse(text) : null
    } catch {}
    if (res.status === 401) {
      sessionStorage.removeItem(KEY)
      key = null
      key = await askKey(json?.error ? `That key was not accepted (${json.error}).` : 'That key was not accepted.')
      sessionStorage.setItem(KEY, key)
      continue
    }
    if (!res.ok) throw Object.assign(new Error(json?.error || `${res.status} ${res.statusText}`), {status: res.status})
    return json
  }
}

$('forget').onclick = () => {
  sessionStorage.removeItem(KEY)
  key = null
  route()
}

// ---- routing ----

function go(path) {
  history.pushState(null, '', path)
  route()
}

document.addEventListener('click', (e) => {
  const a = e.target.closest('a[data-nav]')
  if (!a || e.button || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return
  e.preventDefault()
  go(a.href)
})
addEventListener('popstate', () => route())

function route() {
  view?.stop()
  view = null
  const m = location.pathname.slice(ROOT.length).match(/^\/ui\/sources\/([^/]+)\/?$/)
  if (m) sourceView(decodeURIComponent(m[1]))
  else sourcesView()
}

function crumb(...kids) {
  $('crumb').replaceChildren(...kids)
}

const fail = (e) => main.replaceChildren(h('p', {class: 'empty err'}, String(e.message || e)))

// ---- the sources ----

const baseOf = (s) => s.sse_url.replace(/\/sources\/[^/]+\/sse$/, '')
const q = (s) => `'${String(s).replaceAll("'", `'\\''`)}'`
const emitCurl = (s) =>
  `curl -H "Authorization: Bearer $SSEHUB_API_KEY" -H 'Content-Type: application/json' -d '{"hello":"world"}' ${baseOf(s)}/v1/sources/${s.id}/events`

async function sourcesView() {
  document.title = 'Sources · ssehub'
  crumb(h('span', null, 'Sources'))
  const my = (view = {stop() {}})
  const list = h('div', {class: 'cards'})
  const name = h('input', {placeholder: 'new-source-name', 'aria-label': 'New source name', pattern: '[A-Za-z0-9_\\-]{1,64}', required: true})
  const err = h('span', {class: 'err'})
  const form = h('form', {class: 'newsrc', onsubmit: create}, name, h('button', {type: 'submit', class: 'primary'}, 'New source'))
  main.replaceChildren(h('div', {class: 'bar'}, h('h1', {class: 'grow'}, 'Sources'), err, form), list)

  async function create(e) {
    e.preventDefault()
    err.textContent = ''
    try {
      await api('POST', '/v1/sources', {name: name.value.trim()})
      name.value = ''
      await load()
    } catch (e) {
      err.textContent = e.message
    }
  }

  async function load() {
    // The listing is paged: a page at a time, oldest first, until a short one.
    const data = []
    for (let after = null; ; ) {
      const page = await api('GET', `/v1/sources?limit=${PAGE}${after ? `&after=${encodeURIComponent(after)}` : ''}`)
      if (view !== my) return
      data.push(...page.data)
      const end = page.page_info?.end_cursor
      if (page.data.length < PAGE || !end || end === after) break
      after = end
    }
    if (!data.length) {
      list.replaceChildren(h('div', {class: 'empty'}, 'No sources yet. Create one above, or with ', h('code', null, 'ssehub create NAME'), '.'))
      return
    }
    list.replaceChildren(...data.map(card))
  }

  function field(label, text, what, pre) {
    return h('div', {class: 'field'}, h('span', null, label), pre ? h('pre', null, text) : h('code', {title: text}, text), copyButton(text, what))
  }

  function card(s) {
    return h(
      'article',
      {class: 'card', 'data-source': s.id},
      h('header', null, h('a', {href: `${ROOT}/ui/sources/${encodeURIComponent(s.id)}`, 'data-nav': true}, s.name), h('span', {class: 'id'}, s.id)),
      field('Source id', s.id, 'the id'),
      field('SSE URL', s.sse_url, 'the SSE URL'),
      field('Endpoint', s.endpoint_url, 'the endpoint URL'),
      field('Emit', emitCurl(s), 'the curl command', true),
    )
  }

  await load().catch(fail)
}

// ---- one source ----

const cmpId = (a, b) => {
  const [am, as] = a.split('-').map(Number)
  const [bm, bs] = b.split('-').map(Number)
  return am - bm || as - bs
}

const pad = (n, w = 2) => String(n).padStart(w, '0')
const clock = (ms) => {
  const d = new Date(ms)
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`
}

// A webhook event (SPEC §2.4): method, path, headers, body.
const isHook = (p) => p && typeof p === 'object' && typeof p.method === 'string' && typeof p.path === 'string' && typeof p.headers === 'object' && 'bodyRaw' in p

// A collapsible tree of a JSON value; the first two levels open.
function tree(value, name, depth = 0) {
  const label = name == null ? [] : [h('span', {class: 'k'}, String(name)), ': ']
  if (value && typeof value === 'object') {
    const arr = Array.isArray(value)
    const entries = arr ? value.map((v, i) => [i, v]) : Object.entries(value)
    const node = h('details', {open: depth < 2}, h('summary', null, label, h('span', {class: 't'}, arr ? `[${entries.length}]` : `{${entries.length}}`)))
    for (const [k, v] of entries) node.append(tree(v, k, depth + 1))
    return node
  }
  return h('div', {class: 'leaf'}, label, h('span', {class: `v ${value === null ? 'null' : typeof value}`}, JSON.stringify(value)))
}

function sourceView(name) {
  const my = {
    events: [], // newest first: {id, ms, payload, text, row}
    held: [], // while paused, oldest first (the newest MAX_ROWS of them)
    heldCount: 0,
    newest: null, // the newest id shown or held: the stream resumes after it
    paused: false,
    filter: '',
    selected: null,
    es: null,
    token: null,
    timers: new Set(),
    backoff: 1000,
    stopped: false,
    stop() {
      this.stopped = true
      this.timers.forEach(clearTimeout)
      this.es?.close()
      revoke(this.token)
    },
  }
  view = my
  const later = (fn, ms) => {
    const t = setTimeout(() => {
      my.timers.delete(t)
      if (!my.stopped) fn()
    }, ms)
    my.timers.add(t)
    return t
  }

  const conn = h('span', {class: 'conn', 'data-state': 'connecting'}, 'Connecting…')
  const filter = h('input', {type: 'search', placeholder: 'Filter events', 'aria-label': 'Filter events', oninput: () => applyFilter(filter.value)})
  const pause = h('button', {type: 'button', onclick: togglePause}, 'Pause')
  const clear = h('button', {type: 'button', class: 'danger', onclick: clearHistory}, 'Clear history')
  const count = h('span')
  const heldNote = h('span', {class: 'held'})
  const rows = h('ul', {id: 'events', 'aria-label': 'Events, newest first'})
  const detail = h('section', {class: 'detail', 'aria-live': 'polite'}, h('p', {class: 'muted'}, 'Select an event to see its payload.'))
  const title = h('h1', null, name)
  const idLine = h('span', {class: 'id'})
  const links = h('span', {class: 'actions'})
  main.replaceChildren(
    h('div', {class: 'bar'}, title, idLine, conn, h('span', {class: 'grow'}), links),
    h('div', {class: 'bar'}, filter, pause, heldNote, h('span', {class: 'grow'}), clear),
    h('div', {class: 'split'}, h('section', {class: 'list'}, h('div', {class: 'listhead'}, count, h('span', null, 'newest first')), rows), detail),
  )
  const crumbName = h('span', null, name)
  crumb(h('a', {href: `${ROOT}/ui`, 'data-nav': true}, 'Sources'), h('span', null, '/'), crumbName)
  document.title = `${name} · ssehub`

  function setConn(state, text) {
    conn.dataset.state = state
    conn.textContent = text
  }

  function counts() {
    const n = my.events.length
    count.textContent = `${n} event${n === 1 ? '' : 's'}${n >= MAX_ROWS ? ` (the newest ${MAX_ROWS})` : ''}`
    pause.textContent = my.paused ? (my.heldCount ? `Resume (${my.heldCount})` : 'Resume') : 'Pause'
    heldNote.textContent = my.paused ? `Paused: ${my.heldCount} held back` : ''
    heldNote.className = my.paused ? 'held muted' : 'held'
  }

  const visible = (ev) => !my.filter || ev.id.includes(my.filter) || (ev.lower ??= ev.text.toLowerCase()).includes(my.filter)

  function row(ev) {
    const p = ev.payload
    const sum = isHook(p)
      ? [h('span', {class: 'method'}, p.method), p.path || '/']
      : ev.text.length > 160
        ? ev.text.slice(0, 160) + '…'
        : ev.text
    const li = h(
      'li',
      {class: 'row', tabindex: 0, role: 'option', 'data-id': ev.id, 'aria-selected': 'false', onclick: () => select(ev), onkeydown: (e) => e.key === 'Enter' && select(ev)},
      h('time', {datetime: new Date(ev.ms).toISOString(), title: new Date(ev.ms).toLocaleString()}, clock(ev.ms)),
      h('span', {class: 'sum'}, sum),
      h('span', {class: 'id'}, ev.id),
    )
    li.hidden = !visible(ev)
    return li
  }

  function envelope(env) {
    return {id: env.id, ms: env.indexed_at_ms, payload: env.event, text: JSON.stringify(env.event)}
  }

  // Events in the order they happened (oldest first), each shown once.
  function add(list, fresh) {
    const fragment = document.createDocumentFragment()
    for (const ev of list) {
      ev.row = row(ev)
      if (fresh) ev.row.classList.add('fresh')
      fragment.prepend(ev.row)
      my.events.unshift(ev)
    }
    rows.prepend(fragment)
    for (const old of my.events.splice(MAX_ROWS)) {
      old.row.remove()
      if (my.selected === old) showDetail(null)
    }
    counts()
  }

  function receive(env) {
    if (my.newest && cmpId(env.id, my.newest) <= 0) return // replayed on a reconnect: already here
    my.newest = env.id
    const ev = envelope(env)
    if (my.paused) {
      my.heldCount++
      if (my.held.push(ev) > MAX_ROWS) my.held.shift()
    } else add([ev], true)
    counts()
  }

  function notice(text) {
    rows.prepend(h('li', {class: 'notice'}, text))
  }

  function applyFilter(text) {
    my.filter = text.trim().toLowerCase()
    for (const ev of my.events) ev.row.hidden = !visible(ev)
  }

  function togglePause() {
    my.paused = !my.paused
    if (!my.paused) {
      add(my.held, true)
      my.held = []
      my.heldCount = 0
    }
    counts()
  }

  async function clearHistory() {
    if (!confirm(`Clear the history of ${name}? Its retained events are deleted on the server.`)) return
    try {
      await api('DELETE', `/v1/sources/${encodeURIComponent(my.source.id)}/events`)
      my.events = []
      my.held = []
      my.heldCount = 0
      rows.replaceChildren()
      showDetail(null)
      counts()
      toast('History cleared')
    } catch (e) {
      toast(e.message)
    }
  }

  function select(ev) {
    if (my.selected) my.selected.row.setAttribute('aria-selected', 'false')
    ev.row.setAttribute('aria-selected', 'true')
    showDetail(ev)
    if (matchMedia('(max-width: 900px)').matches) detail.scrollIntoView({behavior: 'smooth', block: 'start'})
  }

  function curlOf(ev) {
    const p = ev.payload
    if (isHook(p)) {
      const query = new URLSearchParams(Object.entries(p.query || {}).flatMap(([k, v]) => (Array.isArray(v) ? v.map((x) => [k, x]) : [[k, v]]))).toString()
      const url = my.source.endpoint_url + (p.path === '/' ? '' : p.path) + (query ? `?${query}` : '')
      const skip = new Set(['host', 'content-length', 'connection', 'transfer-encoding', 'accept-encoding'])
      const headers = Object.entries(p.headers).filter(([k]) => !skip.has(k))
      const body = p.bodyRaw && p.bodyRawEncoding !== 'base64' ? ` --data-binary ${q(p.bodyRaw)}` : ''
      return `curl -X ${p.method} ${q(url)}${headers.map(([k, v]) => ` -H ${q(`${k}: ${v}`)}`).join('')}${body}`
    }
    return `curl -H "Authorization: Bearer $SSEHUB_API_KEY" -H 'Content-Type: application/json' --data-binary ${q(ev.text)} ${baseOf(my.source)}/v1/sources/${my.source.id}/events`
  }

  async function reemit(ev, button) {
    button.disabled = true
    try {
      const r = await api('POST', `/v1/sources/${encodeURIComponent(my.source.id)}/events`, ev.text)
      toast(`Re-emitted as ${r.id}`)
    } catch (e) {
      toast(e.message)
    } finally {
      button.disabled = false
    }
  }

  function showDetail(ev) {
    my.selected = ev
    if (!ev) {
      detail.replaceChildren(h('p', {class: 'muted'}, 'Select an event to see its payload.'))
      return
    }
    const p = ev.payload
    const again = h('button', {type: 'button', class: 'primary', title: 'Emit this payload again, as a new event'}, 'Re-emit')
    again.onclick = () => reemit(ev, again)
    const parts = [
      h(
        'header',
        null,
        h('div', {class: 'grow'}, h('div', {class: 'mono'}, ev.id), h('div', {class: 'muted'}, new Date(ev.ms).toLocaleString())),
        h(
          'div',
          {class: 'actions'},
          h('button', {type: 'button', onclick: () => copy(JSON.stringify(p, null, 2), 'the payload')}, 'Copy'),
          h('button', {type: 'button', onclick: () => copy(curlOf(ev), 'as curl')}, 'Copy as curl'),
          again,
        ),
      ),
    ]
    if (isHook(p)) {
      const query = Object.entries(p.query || {})
      parts.push(h('h3', null, 'Request'), h('div', {class: 'kv'}, h('span', null, p.method), h('span', null, p.path)))
      if (query.length) parts.push(h('h3', null, 'Query'), kv(query))
      if (p.signature) {
        const s = p.signature
        parts.push(h('h3', null, 'Signature'), h('p', {class: s.valid ? 'ok' : 'bad'}, `${s.scheme}: ${s.valid ? 'valid' : `invalid (${s.reason || 'mismatch'})`}`))
      }
      parts.push(h('h3', null, `Headers (${Object.keys(p.headers).length})`), kv(Object.entries(p.headers)))
      parts.push(h('h3', null, 'Body'), p.body && typeof p.body === 'object' ? h('div', {class: 'tree'}, tree(p.body)) : h('pre', null, String(p.body ?? '')))
      parts.push(h('h3', null, p.bodyRawEncoding === 'base64' ? 'Body bytes (base64)' : 'Body bytes'), h('pre', null, p.bodyRaw || ''))
      parts.push(h('details', null, h('summary', {class: 'muted'}, 'Whole payload'), h('div', {class: 'tree'}, tree(p))))
    } else {
      parts.push(h('h3', null, 'Payload'), h('div', {class: 'tree'}, tree(p)))
      parts.push(h('h3', null, 'Raw'), h('pre', null, JSON.stringify(p, null, 2)))
    }
    detail.replaceChildren(...parts)
  }

  function kv(entries) {
    return h('div', {class: 'kv'}, entries.flatMap(([k, v]) => [h('span', null, k), h('span', null, typeof v === 'string' ? v : JSON.stringify(v))]))
  }

  // ---- the stream: summaries first, then the stream after the newest ----

  async function connect() {
    if (my.stopped) return
    let t
    try {
      t = await api('POST', `/v1/sources/${encodeURIComponent(my.source.id)}/tokens`, {expires_in_s: TOKEN_S})
    } catch (e) {
      if (e.status === 404) return setConn('offline', 'Source deleted')
      setConn('offline', 'Offline')
      my.backoff = Math.min(my.backoff * 2, 10000)
      return later(connect, my.backoff)
    }
    if (my.stopped) return revoke(t.data)
    open(t.data)
  }

  function open(token) {
    const params = new URLSearchParams({access_token: token.token})
    // Nothing shown yet: from the start of what is retained, so an event
    // emitted since the summaries is not missed.
    params.set('last_event_id', my.newest || '0')
    const fromStart = !my.newest
    const es = new EventSource(`${ROOT}/sources/${encodeURIComponent(my.source.id)}/sse?${params}`)
    const previous = {es: my.es, token: my.token}
    my.es = es
    my.token = token
    es.onopen = () => {
      if (my.es !== es) return
      setConn('live', 'Live')
      my.backoff = 1000
      if (previous.es) {
        previous.es.close()
        revoke(previous.token)
        previous.es = null
      }
    }
    es.onmessage = (e) => receive(JSON.parse(e.data))
    es.addEventListener('gap', (e) => {
      const gap = JSON.parse(e.data)
      if (!fromStart || es.lastEventId) notice(`Some events after ${gap.after} were no longer retained (lost: ${gap.lost}).`)
    })
    es.onerror = () => {
      if (my.es !== es) return es.close()
      if (es.readyState === EventSource.CONNECTING) return setConn('connecting', 'Reconnecting…')
      // Refused (the token expired while the server was away, or the source is gone): a new token.
      setConn('offline', 'Offline')
      later(connect, my.backoff)
      my.backoff = Math.min(my.backoff * 2, 10000)
    }
    // Renewed before it expires: the new stream resumes after the newest id.
    clearTimeout(my.renew)
    my.timers.delete(my.renew)
    my.renew = later(connect, TOKEN_S * 800)
  }

  async function start() {
    try {
      const {data: source} = await api('GET', `/v1/sources/${encodeURIComponent(name)}`)
      my.source = source
      if (my.stopped) return
      title.textContent = crumbName.textContent = source.name
      document.title = `${source.name} · ssehub`
      idLine.textContent = source.id
      links.replaceChildren(copyButton(source.sse_url, 'the SSE URL'), copyButton(source.endpoint_url, 'the endpoint URL'))
      links.firstChild.textContent = 'Copy SSE URL'
      links.lastChild.textContent = 'Copy endpoint URL'
      const {data} = await api('GET', `/v1/sources/${encodeURIComponent(source.id)}/event_summaries?limit=${MAX_ROWS}`)
      if (my.stopped) return
      const list = data.map(envelope).reverse()
      if (list.length) my.newest = list[list.length - 1].id
      add(list, false)
      connect()
    } catch (e) {
      setConn('offline', 'Offline')
      fail(e)
    }
  }
  counts()
  start()
}

function revoke(token) {
  if (token && key) {
    fetch(`${ROOT}/v1/sources/${encodeURIComponent(token.source_id)}/tokens/${encodeURIComponent(token.token)}`, {method: 'DELETE', headers: {Authorization: `Bearer ${key}`}}).catch(() => {})
  }
}

route()
