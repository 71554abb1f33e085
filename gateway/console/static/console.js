// Command-center console: live alert board, alert detail with map, fleet views; speaks the gateway's /v1 API.

// --- constants -----------------------------------------------------------------------------------------------------

/** The API's largest page: a control room never has more open alerts than that. */
const OPEN_LIMIT = 200;
/** Recent alerts of any state loaded at start, so that what was just closed is still in sight. */
const RECENT_LIMIT = 50;
/** Closed alerts kept on the board: a long shift must not grow the list (and the DOM) without end. */
const CLOSED_KEPT = 100;
/** Devices per page: a screenful or two. */
const DEVICES_PAGE = 50;
/** One beep pattern every 1.5 s: urgent, yet leaves room to talk on the phone. */
const BEEP_PERIOD_MS = 1500;
/** EventSource stops retrying on an answer that is not a stream (a restart, a 503): we retry after 5 s. */
const STREAM_RETRY_MS = 5000;
/** How long `g` waits for its second key. */
const CHORD_MS = 1500;
/** Relative times ("3 min ago") are refreshed twice a minute. */
const TICK_MS = 30000;
/** Several stream events for the open alert within this time cause one detail reload. */
const DETAIL_RELOAD_MS = 200;
/** Typing in the devices filter waits this long before asking the server. */
const FILTER_DELAY_MS = 300;
/** An accuracy circle wider than this would zoom the map out of the building: it is drawn, not fitted. */
const FIT_MAX_RADIUS_M = 2000;
/** Floor plans need closer zooms than street tiles offer. */
const MAP_MAX_ZOOM = 22;
/** Site maps change rarely; refetch after 5 minutes. */
const SITE_CACHE_MS = 300000;
/** Metres per degree of latitude (mean), to size the accuracy circle before Leaflet knows the map. */
const M_PER_DEG = 111320;

/** Each state: its label (colour is never the only sign), its urgency rank and whether it sounds the alarm. */
const STATES = {
  raised: { label: 'NEW', rank: 0, alarm: true, closed: false },
  exhausted: { label: 'EXHAUSTED', rank: 1, alarm: true, closed: false },
  notifying: { label: 'NOTIFYING', rank: 2, alarm: true, closed: false },
  acknowledged: { label: 'ACKNOWLEDGED', rank: 3, alarm: false, closed: false },
  resolved: { label: 'RESOLVED', rank: 4, alarm: false, closed: true },
  cancelled: { label: 'CANCELLED', rank: 4, alarm: false, closed: true },
};

/** Who may do what when /v1/me cannot be read (CONSOLE.md's table); /v1/me's permissions win. */
const ROLE_PERMISSIONS = {
  viewer: ['view'],
  operator: ['view', 'acknowledge', 'resolve'],
  supervisor: ['view', 'acknowledge', 'resolve'],
  admin: ['view', 'acknowledge', 'resolve', 'revoke_device', 'manage_users'],
};

const EVENT_KINDS = { panic: 'Panic button', fall: 'Fall detected', test: 'Test press' };
const CHANNELS = { mqtt: 'Command center (MQTT)', sms: 'SMS', voice: 'Voice call', rest: 'Console', ble: 'BLE', https: 'HTTPS' };
const SOURCES = {
  gps: 'GPS',
  cell: 'Cell towers',
  ble: 'BLE receivers',
  'ble-gatt': 'GPS over BLE',
  'last-known': 'Last known position',
  none: 'None',
};
const REASONS = { 'false-alarm': 'false alarm', handled: 'handled', dispatched: 'dispatched' };
const GOOD_STATUSES = new Set(['delivered', 'completed', 'answered', 'sent', 'accepted']);
const BAD_STATUSES = new Set(['failed', 'undelivered', 'no-answer', 'busy', 'canceled', 'cancelled']);

// --- small DOM helpers ---------------------------------------------------------------------------------------------

const $ = (selector, root = document) => root.querySelector(selector);

/** An element with attributes (`class`, `dataset`, booleans, the rest as attributes) and children (strings or nodes). */
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(key, '');
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

function replaceChildren(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

// --- formatting ----------------------------------------------------------------------------------------------------

const formatters = new Map();

/** Intl.DateTimeFormat in `zone` (an IANA name), or the browser's zone when it is null or unknown. */
function dateFormat(zone, style) {
  const key = `${zone || ''}|${style}`;
  let format = formatters.get(key);
  if (!format) {
    const options = {
      long: { year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit', timeZoneName: 'short' },
      short: { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit', timeZoneName: 'short' },
      time: { hour: '2-digit', minute: '2-digit', second: '2-digit' },
    }[style];
    try {
      format = new Intl.DateTimeFormat(undefined, { ...options, timeZone: zone || undefined });
    } catch {
      format = new Intl.DateTimeFormat(undefined, options);
    }
    formatters.set(key, format);
  }
  return format;
}

function parseTime(value) {
  if (!value) return null;
  const date = new Date(value);
  return Number.isNaN(date.getTime()) ? null : date;
}

function formatTime(value, zone, style = 'long') {
  const date = parseTime(value);
  return date ? dateFormat(zone, style).format(date) : '—';
}

const relativeFormat = new Intl.RelativeTimeFormat(undefined, { numeric: 'auto', style: 'short' });
const RELATIVE_UNITS = [['year', 31536000], ['month', 2592000], ['day', 86400], ['hour', 3600], ['minute', 60], ['second', 1]];

function formatRelative(value) {
  const date = parseTime(value);
  if (!date) return '';
  const seconds = (date.getTime() - Date.now()) / 1000;
  if (Math.abs(seconds) < 45) return seconds > 5 ? 'in a moment' : 'just now';
  for (const [unit, size] of RELATIVE_UNITS) {
    if (Math.abs(seconds) >= size) return relativeFormat.format(Math.round(seconds / size), unit);
  }
  return 'just now';
}

/** A <time> showing the absolute time and, refreshed by the tick, how long ago it was. */
function timeElement(value, zone, style = 'long', withRelative = true) {
  const el = h('time', { datetime: value || null, class: 'when-abs', title: style === 'long' ? null : formatTime(value, zone) }, formatTime(value, zone, style));
  if (!withRelative || !parseTime(value)) return el;
  return h('span', { class: 'when-pair' }, el, ' ', relativeElement(value, true));
}

/** "3 min ago", kept fresh by the tick. */
function relativeElement(value, parenthesised = false) {
  const el = h('span', { class: 'relative', dataset: { ts: value, paren: parenthesised ? 'true' : null } });
  el.textContent = relativeText(el);
  return el;
}

function relativeText(el) {
  const text = formatRelative(el.dataset.ts);
  return el.dataset.paren === 'true' ? `(${text})` : text;
}

function refreshRelativeTimes(root = document) {
  for (const el of root.querySelectorAll('.relative[data-ts]')) el.textContent = relativeText(el);
}

function stateInfo(state) {
  return STATES[state] || { label: String(state || 'unknown').toUpperCase(), rank: 3.5, alarm: false, closed: false };
}

function stateClass(state) {
  return Object.hasOwn(STATES, state) ? state : 'unknown';
}

function stateBadge(state) {
  return h('span', { class: `badge state-${stateClass(state)}` }, stateInfo(state).label);
}

function batteryText(battery, bare = false) {
  const word = bare ? '' : 'Battery ';
  if (battery === null || battery === undefined) return `${word}unknown`;
  return `${word}${battery} %${battery < 20 ? ' (low)' : ''}`;
}

function batteryElement(battery, bare = false) {
  const low = typeof battery === 'number' && battery < 20;
  return h('span', { class: low ? 'battery battery-low' : 'battery' }, batteryText(battery, bare));
}

function wearerName(doc) {
  return doc?.wearer_info?.name || doc?.device?.wearer || doc?.device?.id || 'Unknown wearer';
}

function initials(name) {
  const words = String(name).trim().split(/\s+/).filter((w) => /\p{L}|\p{N}/u.test(w));
  if (!words.length) return '?';
  const first = [...words[0]][0];
  const last = words.length > 1 ? [...words[words.length - 1]][0] : '';
  return (first + last).toUpperCase();
}

/** One of six avatar colours, the same for the same name. */
function avatarTone(name) {
  let sum = 0;
  for (const ch of String(name)) sum = (sum * 31 + ch.codePointAt(0)) >>> 0;
  return `tone-${sum % 6}`;
}

function placeOf(doc) {
  return doc?.location?.properties?.place || null;
}

function siteName(id) {
  if (!id) return '';
  return app.siteList.get(id)?.name || id;
}

/** Where in the site map, as responders read it (else its pieces), or null when the wearer is not placed. */
function siteMapPlace(doc) {
  const props = doc?.location?.properties;
  if (props?.text) return props.text;
  const place = props?.place;
  if (!place) return null;
  const parts = [siteName(place.site), place.building && `building ${place.building}`,
    place.floor !== null && place.floor !== undefined && `floor ${place.floor}`, place.room && `room ${place.room}`];
  return parts.filter(Boolean).join(', ') || null;
}

/** The site-map place, else the coordinates, else the site. */
function placeText(doc) {
  const mapped = siteMapPlace(doc);
  if (mapped) return mapped;
  const props = doc?.location?.properties;
  const point = coordinates(doc);
  if (point) {
    const accuracy = Number.isFinite(props?.accuracy_m) && props.accuracy_m < 65535 ? ` ± ${props.accuracy_m} m` : '';
    return `${point.lat.toFixed(5)}, ${point.lon.toFixed(5)}${accuracy} (${SOURCES[props?.source] || props?.source || 'position'})`;
  }
  const site = siteName(doc?.device?.site);
  return site ? `${site} (no position)` : 'Location unknown';
}

function incidentSite(doc) {
  return placeOf(doc)?.site || doc?.device?.site || '';
}

function coordinates(doc) {
  const geometry = doc?.location?.geometry;
  if (!geometry || geometry.type !== 'Point' || !Array.isArray(geometry.coordinates)) return null;
  const [lon, lat] = geometry.coordinates;
  return Number.isFinite(lat) && Number.isFinite(lon) ? { lat, lon } : null;
}

function capitalise(text) {
  return text ? text[0].toUpperCase() + text.slice(1) : text;
}

function names(list) {
  return Array.isArray(list) && list.length ? list.join(', ') : '';
}

// --- app state -----------------------------------------------------------------------------------------------------

const app = {
  csrf: '',
  config: {},
  me: null,
  permissions: new Set(),
  /** alert_id → the state document with the highest revision seen. */
  incidents: new Map(),
  /** alert_ids already seen, so that only really new alerts notify. */
  seen: new Set(),
  /** Whether the first load finished: alerts before it are not "new". */
  loaded: false,
  selectedId: null,
  route: { view: 'board', id: null },
  /** The detail document shown (with events and notifications). */
  detail: null,
  siteList: new Map(),
  siteDocs: new Map(),
  incidentMap: null,
  ready: null,
  /** What the tab's title says after the count of waiting alerts. */
  title: 'Alerts',
  waiting: 0,
  /** Raised when what rows show besides the incident changes (site names): every row is rebuilt. */
  rowEpoch: 0,
};

function can(permission) {
  return app.permissions.has(permission);
}

// --- API -----------------------------------------------------------------------------------------------------------

/** A refused or failed request; `detail` is the problem+json detail, for people. */
class ApiError extends Error {
  constructor(status, detail, reason = null) {
    super(detail);
    this.status = status;
    this.detail = detail;
    this.reason = reason;
  }
}

function goToLogin() {
  window.location.assign('/console/login');
}

async function api(path, { method = 'GET', body } = {}) {
  const headers = { Accept: 'application/json' };
  const init = { method, headers, credentials: 'same-origin', cache: 'no-store' };
  if (method !== 'GET') {
    headers['Content-Type'] = 'application/json';
    headers['X-CSRF-Token'] = app.csrf;
    init.body = JSON.stringify(body ?? {});
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw new ApiError(0, 'The gateway cannot be reached.');
  }
  if (response.status === 401) {
    goToLogin();
    throw new ApiError(401, 'Your session has ended: please sign in again.', 'unauthorized');
  }
  const type = response.headers.get('Content-Type') || '';
  let data = null;
  if (type.includes('json')) {
    try {
      data = await response.json();
    } catch {
      data = null;
    }
  }
  if (!response.ok) {
    const detail = data?.detail || data?.title || `${response.status} ${response.statusText}`.trim();
    throw new ApiError(response.status, detail, data?.reason ?? null);
  }
  return data;
}

/** Every page of a paginated list (receivers and sites are short). */
async function fetchAll(path, pages = 20) {
  const items = [];
  let cursor = null;
  for (let i = 0; i < pages; i += 1) {
    const separator = path.includes('?') ? '&' : '?';
    const page = await api(cursor ? `${path}${separator}cursor=${encodeURIComponent(cursor)}` : path);
    items.push(...(page?.items || []));
    cursor = page?.next_cursor;
    if (!cursor) break;
  }
  return items;
}

// --- messages ------------------------------------------------------------------------------------------------------

function showError(prefix, error) {
  const detail = error instanceof ApiError ? error.detail : String(error?.message || error);
  const el = $('#message');
  el.textContent = prefix ? `${prefix}: ${detail}` : detail;
  $('#message-dismiss').hidden = false;
}

function clearError() {
  $('#message').textContent = '';
  $('#message-dismiss').hidden = true;
}

let statusTimer = null;

function showStatus(text) {
  const el = $('#status-line');
  el.textContent = text;
  clearTimeout(statusTimer);
  statusTimer = setTimeout(() => { el.textContent = ''; }, 8000);
}

function announce(text) {
  const el = $('#announcer');
  el.textContent = '';
  // A fresh text node in a later task makes screen readers read the region again.
  setTimeout(() => { el.textContent = text; }, 50);
}

// --- alarm sound ---------------------------------------------------------------------------------------------------

/** Oscillator beeps while an alert waits; browsers keep the AudioContext suspended until a user gesture. */
class AlarmSound {
  constructor(onChange) {
    this.onChange = onChange;
    this.context = null;
    this.active = false;
    this.muted = false;
    this.timer = null;
    const AudioContextClass = window.AudioContext || window.webkitAudioContext;
    if (AudioContextClass) {
      try {
        this.context = new AudioContextClass();
        this.context.addEventListener('statechange', () => this.update());
      } catch {
        this.context = null;
      }
    }
  }

  get supported() {
    return this.context !== null;
  }

  get blocked() {
    return this.supported && this.context.state !== 'running';
  }

  async enable() {
    if (!this.supported || this.context.state === 'running') return;
    try {
      await this.context.resume();
    } catch {
      // Still blocked: the button stays.
    }
    this.update();
  }

  setActive(active) {
    this.active = active;
    this.update();
  }

  setMuted(muted) {
    this.muted = muted;
    this.update();
  }

  get status() {
    if (!this.supported) return 'unsupported';
    if (this.muted) return 'muted';
    if (!this.active) return 'off';
    return this.blocked ? 'blocked' : 'playing';
  }

  update() {
    const sound = this.active && !this.muted && this.supported;
    if (sound && !this.timer) {
      this.beep();
      this.timer = setInterval(() => this.beep(), BEEP_PERIOD_MS);
    } else if (!sound && this.timer) {
      clearInterval(this.timer);
      this.timer = null;
    }
    this.onChange(this);
  }

  beep() {
    const context = this.context;
    if (!context || context.state !== 'running') return;
    const start = context.currentTime + 0.02;
    for (const [offset, frequency] of [[0, 988], [0.28, 784], [0.56, 988]]) {
      const oscillator = context.createOscillator();
      const gain = context.createGain();
      oscillator.type = 'square';
      oscillator.frequency.value = frequency;
      gain.gain.setValueAtTime(0.0001, start + offset);
      gain.gain.exponentialRampToValueAtTime(0.25, start + offset + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, start + offset + 0.22);
      oscillator.connect(gain).connect(context.destination);
      oscillator.start(start + offset);
      oscillator.stop(start + offset + 0.25);
    }
  }
}

let sound = null;

function renderSoundControls(alarm) {
  const enable = $('#sound-toggle');
  enable.hidden = !alarm.blocked;
  const mute = $('#mute-toggle');
  mute.hidden = !alarm.supported;
  mute.setAttribute('aria-pressed', String(alarm.muted));
  mute.textContent = alarm.muted ? 'Unmute alarm' : 'Mute alarm';
  document.body.dataset.sound = alarm.status;
}

// --- notifications -------------------------------------------------------------------------------------------------

function renderNotifyButton() {
  const button = $('#notify-toggle');
  if (!('Notification' in window)) {
    button.hidden = true;
    return;
  }
  const permission = Notification.permission;
  button.textContent = { granted: 'Notifications on', denied: 'Notifications blocked' }[permission] || 'Enable notifications';
  button.disabled = permission !== 'default';
  button.dataset.permission = permission;
}

async function askNotificationPermission() {
  if (!('Notification' in window)) return;
  try {
    await Notification.requestPermission();
  } catch {
    // Old callback-only implementations: the button shows whatever state results.
  }
  renderNotifyButton();
}

function notifyNewAlert(doc) {
  if (!('Notification' in window) || Notification.permission !== 'granted') return;
  try {
    const notification = new Notification(`${stateInfo(doc.state).label}: ${wearerName(doc)}`, {
      body: `${EVENT_KINDS[doc.event] || doc.event || 'Alert'}${doc.test ? ' (TEST)' : ''} — ${placeText(doc)}`,
      tag: doc.alert_id,
      requireInteraction: true,
    });
    notification.addEventListener('click', () => {
      window.focus();
      navigate(`#/incidents/${encodeURIComponent(doc.alert_id)}`);
      notification.close();
    });
  } catch {
    // Some mobile browsers only notify from a service worker: the alarm and the board still show it.
  }
}

// --- incidents: merge and board ------------------------------------------------------------------------------------

/** Keeps the document if it is newer than the one held; returns whether it changed anything. */
function ingest(doc, { live = false, fromDetail = false } = {}) {
  if (!doc || typeof doc.alert_id !== 'string') return false;
  const id = doc.alert_id;
  const held = app.incidents.get(id);
  if (held && (Number(held.revision) || 0) >= (Number(doc.revision) || 0)) return false;
  const state = { ...doc };
  delete state.events;
  delete state.notifications;
  delete state.wearer_info;
  app.incidents.set(id, state);
  const isNew = live && app.loaded && !held && !app.seen.has(id) && stateInfo(doc.state).alarm;
  app.seen.add(id);
  if (isNew) onNewAlert(state);
  scheduleRender();
  if (!fromDetail && app.route.view === 'detail' && app.route.id === id) scheduleDetailReload();
  return true;
}

function onNewAlert(doc) {
  // A new alert must be heard: muting lasts until the next one.
  if (sound?.muted) sound.setMuted(false);
  announce(`New alert: ${wearerName(doc)}, ${EVENT_KINDS[doc.event] || doc.event || ''}${doc.test ? ', test' : ''}, ${placeText(doc)}`);
  notifyNewAlert(doc);
}

function receivedMs(doc) {
  return parseTime(doc.received_at)?.getTime() ?? 0;
}

function compareUrgency(a, b) {
  return stateInfo(a.state).rank - stateInfo(b.state).rank
    || receivedMs(b) - receivedMs(a)
    || (a.alert_id < b.alert_id ? -1 : 1);
}

/** Drops the oldest closed alerts beyond CLOSED_KEPT (never the one open in the detail). */
function trimClosed() {
  const closed = [...app.incidents.values()].filter((d) => stateInfo(d.state).closed).sort((a, b) => receivedMs(b) - receivedMs(a));
  for (const doc of closed.slice(CLOSED_KEPT)) {
    if (doc.alert_id !== app.route.id) app.incidents.delete(doc.alert_id);
  }
}

function sortedIncidents() {
  return [...app.incidents.values()].sort(compareUrgency);
}

let renderQueued = false;

/** Renders on the next task, not the next frame: a hidden tab must still start the alarm. */
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  setTimeout(() => {
    renderQueued = false;
    renderAll();
  }, 0);
}

function renderAll() {
  trimClosed();
  const sorted = sortedIncidents();
  renderBoard(sorted);
  renderAlarm(sorted);
  if (app.route.view === 'sites') renderSites();
}

/** One board row: the whole row is a link to the detail; state by colour and by text. */
function incidentRow(doc) {
  const id = doc.alert_id;
  const kind = EVENT_KINDS[doc.event] || capitalise(doc.event || 'alert');
  const place = placeText(doc);
  const site = siteName(incidentSite(doc));
  const kindAndSite = site && !place.includes(site) ? `${kind} · ${site}` : kind;
  const who = doc.state === 'acknowledged' && doc.acknowledged_by ? `Taken by ${doc.acknowledged_by}` : null;
  const resolved = doc.state === 'resolved' && doc.resolution ? `Resolved: ${REASONS[doc.resolution] || doc.resolution}` : null;
  const link = h('a', { class: 'incident-link', href: `#/incidents/${encodeURIComponent(id)}` },
    h('span', { class: 'incident-state' }, stateBadge(doc.state)),
    h('span', { class: 'incident-main' },
      h('span', { class: 'incident-title' },
        h('span', { class: 'wearer' }, wearerName(doc)),
        doc.test ? h('span', { class: 'tag tag-test' }, 'TEST') : null,
        doc.delayed ? h('span', { class: 'tag tag-delayed' }, 'DELAYED') : null),
      h('span', { class: 'incident-kind' }, kindAndSite),
      h('span', { class: 'incident-place' }, place),
      who || resolved ? h('span', { class: 'incident-who' }, who || resolved) : null),
    h('span', { class: 'incident-meta' },
      timeElement(doc.received_at, doc.time_zone, 'short'),
      batteryElement(doc.battery)));
  return h('li', {
    class: `incident state-${stateClass(doc.state)}`,
    dataset: { alertId: id, state: doc.state, revision: String(doc.revision ?? '') },
  }, link);
}

const rowCache = new Map();

function renderBoard(sorted) {
  const board = $('#board');
  const focusedId = board.contains(document.activeElement) ? document.activeElement.closest('[data-alert-id]')?.dataset.alertId : null;
  const keep = new Set();
  let previous = null;
  for (const doc of sorted) {
    const id = doc.alert_id;
    keep.add(id);
    let cached = rowCache.get(id);
    if (!cached || cached.revision !== doc.revision || cached.epoch !== app.rowEpoch) {
      const row = incidentRow(doc);
      if (cached) cached.row.replaceWith(row);
      cached = { row, revision: doc.revision, epoch: app.rowEpoch };
      rowCache.set(id, cached);
    }
    const row = cached.row;
    const wanted = previous ? previous.nextSibling : board.firstChild;
    if (wanted !== row) board.insertBefore(row, wanted);
    previous = row;
  }
  for (const [id, cached] of rowCache) {
    if (!keep.has(id)) {
      cached.row.remove();
      rowCache.delete(id);
    }
  }
  if (app.selectedId && !app.incidents.has(app.selectedId)) app.selectedId = null;
  markSelection();
  if (focusedId && rowCache.has(focusedId) && !board.contains(document.activeElement)) {
    $('.incident-link', rowCache.get(focusedId).row).focus({ preventScroll: true });
  }
  $('#board-empty').hidden = sorted.length > 0;
  const open = sorted.filter((d) => !stateInfo(d.state).closed).length;
  const waiting = sorted.filter((d) => stateInfo(d.state).alarm).length;
  $('#board-summary').textContent = `${open} open, ${waiting} waiting for acknowledgement`;
  app.waiting = waiting;
  updateTitle();
}

/** The tab's title leads with the number of alerts waiting, so that a background tab still says it. */
function updateTitle() {
  const count = app.waiting ? `(${app.waiting}) ` : '';
  document.title = `${count}${app.title} – Panic gateway console`;
}

function markSelection() {
  for (const [id, cached] of rowCache) {
    const selected = id === app.selectedId;
    cached.row.classList.toggle('selected', selected);
    const open = app.route.view === 'detail' && app.route.id === id;
    cached.row.classList.toggle('open', open);
    const link = $('.incident-link', cached.row);
    if (open) link.setAttribute('aria-current', 'true');
    else link.removeAttribute('aria-current');
  }
}

function renderAlarm(sorted) {
  const waiting = sorted.filter((d) => stateInfo(d.state).alarm);
  const alarm = $('#alarm');
  const active = waiting.length > 0;
  alarm.dataset.active = String(active);
  alarm.hidden = !active;
  if (active) {
    const exhausted = waiting.filter((d) => d.state === 'exhausted').length;
    $('#alarm-count').textContent = `${waiting.length} alert${waiting.length === 1 ? '' : 's'} not acknowledged`;
    $('#alarm-extra').textContent = exhausted ? `, ${exhausted} unanswered by everyone` : '';
    $('#alarm-show').href = `#/incidents/${encodeURIComponent(waiting[0].alert_id)}`;
  }
  sound?.setActive(active);
}

function selectIncident(id, { focus = true } = {}) {
  app.selectedId = id;
  markSelection();
  const cached = rowCache.get(id);
  if (cached && focus) {
    const link = $('.incident-link', cached.row);
    link.focus({ preventScroll: true });
    cached.row.scrollIntoView({ block: 'nearest' });
  }
}

function moveSelection(step) {
  const ids = [...$('#board').children].map((row) => row.dataset.alertId);
  if (!ids.length) return;
  const current = ids.indexOf(app.selectedId ?? app.route.id);
  let next;
  if (current < 0) next = step > 0 ? 0 : ids.length - 1;
  else next = Math.min(ids.length - 1, Math.max(0, current + step));
  selectIncident(ids[next]);
  // A narrow screen hides the board behind the detail: move the detail along instead.
  if (app.route.view === 'detail' && !$('#board-view').offsetParent && ids[next] !== app.route.id) {
    navigate(`#/incidents/${encodeURIComponent(ids[next])}`);
  }
}

// --- loading and the live stream -----------------------------------------------------------------------------------

async function loadBoard({ live = false } = {}) {
  const [open, recent] = await Promise.all([
    api(`/v1/incidents?state=open&limit=${OPEN_LIMIT}`),
    api(`/v1/incidents?limit=${RECENT_LIMIT}`),
  ]);
  for (const doc of [...(open?.items || []), ...(recent?.items || [])]) ingest(doc, { live });
}

function setConnection(state, text) {
  const el = $('#connection');
  el.dataset.state = state;
  el.textContent = text;
}

let stream = null;
let streamWasOpen = false;

function openStream() {
  setConnection(stream ? 'reconnecting' : 'connecting', stream ? 'Reconnecting…' : 'Connecting…');
  const source = new EventSource('/v1/stream');
  stream = source;
  source.addEventListener('open', () => {
    setConnection('live', 'Live');
    // After a reconnection, reload the lists too: the stream replays from Last-Event-ID, but a stream that never
    // carried an event has no ID to send, and what changed in between must not be missed.
    if (streamWasOpen) {
      loadBoard({ live: true }).catch(() => {});
      if (app.route.view === 'detail') scheduleDetailReload();
    }
    streamWasOpen = true;
  });
  source.addEventListener('incident', (event) => {
    let doc;
    try {
      doc = JSON.parse(event.data);
    } catch {
      return;
    }
    ingest(doc, { live: true });
  });
  source.addEventListener('error', () => {
    if (source !== stream) return;
    if (source.readyState === EventSource.CLOSED) {
      // The browser gave up (the answer was not a stream): start over, reloading what the gap may have hidden.
      setConnection('offline', 'Offline, retrying…');
      source.close();
      setTimeout(async () => {
        try {
          await loadBoard({ live: true });
        } catch (error) {
          if (error.status === 401) return;
        }
        if (source === stream) openStream();
      }, STREAM_RETRY_MS);
    } else {
      setConnection('reconnecting', 'Reconnecting…');
    }
  });
}

async function loadMe() {
  try {
    const me = await api('/v1/me');
    app.me = me;
    if (Array.isArray(me?.permissions)) app.permissions = new Set(me.permissions);
    if (me?.csrf_token) app.csrf = me.csrf_token;
    if (me?.console) app.config = { ...app.config, ...me.console };
  } catch (error) {
    if (error.status !== 401) showError('Could not read your account', error);
  }
}

async function loadSiteList() {
  try {
    for (const site of await fetchAll('/v1/sites?limit=200')) app.siteList.set(site.id, site);
    app.rowEpoch += 1;
  } catch {
    // Sites only add names and time zones; the board works without them.
  }
}

async function siteDocument(id) {
  const cached = app.siteDocs.get(id);
  if (cached && Date.now() - cached.at < SITE_CACHE_MS) return cached.doc;
  const doc = await api(`/v1/sites/${encodeURIComponent(id)}`);
  app.siteDocs.set(id, { doc, at: Date.now() });
  return doc;
}

// --- routing -------------------------------------------------------------------------------------------------------

function parseRoute(hash) {
  const path = hash.replace(/^#/, '');
  const incident = /^\/incidents\/([^/]+)$/.exec(path);
  if (incident) {
    let id;
    try {
      id = decodeURIComponent(incident[1]);
    } catch {
      id = incident[1];
    }
    return { view: 'detail', id };
  }
  const view = { '/devices': 'devices', '/receivers': 'receivers', '/sites': 'sites' }[path];
  return { view: view || 'board', id: null };
}

function navigate(hash) {
  if (window.location.hash === hash) applyRoute();
  else window.location.hash = hash;
}

const VIEW_SECTIONS = { board: '#board-view', sites: '#sites-view', devices: '#devices-view', receivers: '#receivers-view' };
const VIEW_TITLES = { board: 'Alerts', detail: 'Alert', sites: 'Sites', devices: 'Devices', receivers: 'Receivers' };

function applyRoute() {
  const previous = app.route;
  const route = parseRoute(window.location.hash);
  app.route = route;
  const main = $('#main');
  main.dataset.view = route.view;
  for (const [view, selector] of Object.entries(VIEW_SECTIONS)) {
    $(selector).hidden = !(view === route.view || (view === 'board' && route.view === 'detail'));
  }
  const detail = $('#detail');
  detail.hidden = route.view !== 'detail';
  for (const link of document.querySelectorAll('.nav a')) {
    const current = link.dataset.view === route.view || (link.dataset.view === 'board' && route.view === 'detail');
    if (current) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  if (previous.view !== route.view || previous.id !== route.id) {
    clearError();
    $('#status-line').textContent = '';
  }

  if (route.view === 'detail') {
    app.selectedId = route.id;
    openDetail(route.id, previous.id !== route.id || previous.view !== 'detail');
  } else {
    closeDetail();
    if (route.view === 'board' && previous.view === 'detail' && app.selectedId && rowCache.has(app.selectedId)) {
      selectIncident(app.selectedId);
    } else if (previous.view !== route.view) {
      main.focus({ preventScroll: true });
      window.scrollTo(0, 0);
    }
  }
  markSelection();
  if (route.view === 'sites') renderSites();
  if (route.view === 'devices' && previous.view !== 'devices') loadDevices({ reset: true });
  if (route.view === 'receivers' && previous.view !== 'receivers') loadReceivers();
  if (route.view !== 'detail' || previous.id !== route.id) {
    app.title = VIEW_TITLES[route.view];
    updateTitle();
  }
  if (route.view === 'board') renderAll();
}

// --- alert detail --------------------------------------------------------------------------------------------------

let detailToken = 0;
let detailTimer = null;
let focusResolveOnLoad = false;

function scheduleDetailReload() {
  clearTimeout(detailTimer);
  detailTimer = setTimeout(() => {
    if (app.route.view === 'detail') loadDetail(app.route.id);
  }, DETAIL_RELOAD_MS);
}

function openDetail(id, fresh) {
  const detail = $('#detail');
  detail.dataset.alertId = id;
  if (fresh) {
    app.detail = null;
    app.incidentMap?.destroy();
    app.incidentMap = null;
    $('#detail-title').textContent = 'Loading…';
    for (const selector of ['#detail-badges', '#detail-when', '#detail-facts', '#detail-contacts', '#detail-location', '#timeline-events', '#notifications tbody', '#map-note']) {
      $(selector).replaceChildren();
    }
    replaceChildren($('#detail-avatar'));
    $('#detail-notes').hidden = true;
    $('#resolve-form').reset();
    $('#note-form').reset();
    $('#ack-button').disabled = true;
    $('#action-hint').textContent = '';
    const known = app.incidents.get(id);
    if (known) renderDetail({ ...known, events: null, notifications: null });
    loadDetail(id).then(() => {
      if (app.route.id !== id) return;
      if (focusResolveOnLoad) {
        focusResolveOnLoad = false;
        focusResolve();
      } else if (!detail.contains(document.activeElement) && !$('#board').contains(document.activeElement)) {
        $('#detail-title').focus({ preventScroll: true });
      }
    });
    if (window.matchMedia('(max-width: 900px)').matches) window.scrollTo(0, 0);
  }
}

function closeDetail() {
  clearTimeout(detailTimer);
  app.detail = null;
  app.incidentMap?.destroy();
  app.incidentMap = null;
  $('#detail').dataset.alertId = '';
}

async function loadDetail(id) {
  const token = ++detailToken;
  try {
    const doc = await api(`/v1/incidents/${encodeURIComponent(id)}`);
    if (token !== detailToken || app.route.id !== id) return;
    ingest(doc, { fromDetail: true });
    app.detail = doc;
    renderDetail(doc);
  } catch (error) {
    if (token !== detailToken || app.route.id !== id) return;
    if (error.status === 404) {
      $('#detail-title').textContent = 'Alert not found';
      showError('', error);
    } else {
      showError('Could not load the alert', error);
    }
  }
}

function renderDetail(doc) {
  const name = wearerName(doc);
  const info = stateInfo(doc.state);
  $('#detail').dataset.state = doc.state;
  const avatar = $('#detail-avatar');
  avatar.className = `avatar ${avatarTone(name)}`;
  avatar.textContent = initials(name);
  $('#detail-title').textContent = name;
  app.title = `${info.label}: ${name}`;
  updateTitle();
  replaceChildren($('#detail-badges'),
    stateBadge(doc.state), ' ',
    h('span', { class: 'tag tag-kind' }, EVENT_KINDS[doc.event] || capitalise(doc.event || 'alert')),
    doc.test ? [' ', h('span', { class: 'tag tag-test' }, 'TEST — not dispatched')] : null,
    doc.delayed ? [' ', h('span', { class: 'tag tag-delayed' }, 'DELAYED — reached the gateway late')] : null);
  replaceChildren($('#detail-when'), 'Raised ', timeElement(doc.received_at, doc.time_zone));

  const notes = doc.wearer_info?.notes;
  $('#detail-notes').hidden = !notes;
  $('#notes-text').textContent = notes || '';

  renderActions(doc);
  renderFacts(doc);
  if (doc.wearer_info !== undefined) renderContacts(doc.wearer_info?.contacts);
  renderLocation(doc);
  if (Array.isArray(doc.events)) renderEvents(doc);
  if (Array.isArray(doc.notifications)) renderNotifications(doc);
}

function renderActions(doc) {
  const info = stateInfo(doc.state);
  const ack = $('#ack-button');
  const hint = $('#action-hint');
  const mayAck = can('acknowledge');
  ack.hidden = !mayAck;
  const acknowledged = doc.state === 'acknowledged';
  ack.disabled = !mayAck || acknowledged || info.closed || ack.dataset.busy === 'true';
  ack.replaceChildren(acknowledged ? 'Acknowledged' : info.closed ? 'Closed' : 'Acknowledge', ' ', h('kbd', {}, 'a'));
  const hints = [];
  if (doc.acknowledged_by) {
    hints.push(`Acknowledged by ${doc.acknowledged_by}`, doc.acknowledged_at ? ` at ${formatTime(doc.acknowledged_at, doc.time_zone)}` : '', '. ');
  }
  if (doc.state === 'resolved') {
    hints.push(`Resolved (${REASONS[doc.resolution] || doc.resolution || 'no reason'})`,
      doc.resolved_by ? ` by ${doc.resolved_by}` : '', doc.resolved_at ? ` at ${formatTime(doc.resolved_at, doc.time_zone)}` : '', '. ');
  }
  if (doc.state === 'cancelled') hints.push('The wearer cancelled this alert. ');
  if (!mayAck) hints.push(`Your role (${app.me?.role || document.body.dataset.role}) may view alerts but not handle them.`);
  hint.textContent = hints.join('');

  const resolve = $('#resolve-form');
  resolve.hidden = !can('resolve') || doc.state === 'resolved';
  $('#note-form').hidden = !can('acknowledge');
  $('.handling').hidden = resolve.hidden && $('#note-form').hidden;
}

function fact(dl, term, ...value) {
  dl.append(h('div', { class: 'fact' }, h('dt', {}, term), h('dd', {}, ...value)));
}

function renderFacts(doc) {
  const dl = $('#detail-facts');
  dl.replaceChildren();
  fact(dl, 'Device', h('code', {}, doc.device?.id || '—'));
  fact(dl, 'Battery', batteryElement(doc.battery, true));
  fact(dl, 'Site', siteName(doc.device?.site) || '—');
  fact(dl, 'Arrived over', CHANNELS[doc.transport] || doc.transport || '—');
  fact(dl, 'Pressed at', timeElement(doc.device_time, doc.time_zone, 'long', false));
  if (doc.short_code) fact(dl, 'SMS reply code', h('code', {}, doc.short_code));
  if (doc.zone) fact(dl, 'Zone', doc.zone);
  fact(dl, 'Revision', String(doc.revision ?? '—'));
}

function renderContacts(contacts) {
  const list = $('#detail-contacts');
  list.replaceChildren();
  if (!Array.isArray(contacts) || !contacts.length) {
    list.append(h('li', { class: 'hint' }, 'None on file.'));
    return;
  }
  for (const contact of contacts) {
    if (typeof contact === 'string') {
      list.append(h('li', {}, contact));
      continue;
    }
    list.append(h('li', {},
      h('span', { class: 'contact-name' }, contact.name || '—'),
      contact.relation ? ` (${contact.relation})` : '',
      contact.phone ? [' ', h('span', { class: 'contact-phone' }, contact.phone)] : ''));
  }
}

function renderLocation(doc) {
  const dl = $('#detail-location');
  dl.replaceChildren();
  const props = doc.location?.properties || {};
  const point = coordinates(doc);
  fact(dl, 'Place', siteMapPlace(doc) || 'Not placed in the site map');
  if (point) {
    const accuracy = props.accuracy_m === null || props.accuracy_m === undefined ? 'accuracy unknown'
      : props.accuracy_m >= 65535 ? '± 65535 m or worse' : `± ${props.accuracy_m} m`;
    fact(dl, 'Coordinates', h('span', { class: 'coords' }, `${point.lat.toFixed(6)}, ${point.lon.toFixed(6)}`), ` ${accuracy}`);
  } else {
    fact(dl, 'Coordinates', 'none');
  }
  const source = props.source || (doc.location ? 'none' : null);
  if (source) {
    const age = source === 'gps' && Number.isFinite(props.fix_age_s) ? ` (fix ${props.fix_age_s} s before the press)` : '';
    fact(dl, 'Source', `${SOURCES[source] || source}${age}`);
  } else {
    fact(dl, 'Source', 'No position known');
  }
  if (doc.alert_id) {
    fact(dl, 'For dispatch', h('a', { href: `/v1/incidents/${encodeURIComponent(doc.alert_id)}/location.pidf`, download: `${doc.alert_id}.pidf.xml` }, 'PIDF-LO document'));
  }
  drawMap(doc);
}

// --- the map -------------------------------------------------------------------------------------------------------

/**
 * A floor plan image pinned by three of its corners (top-left, top-right, bottom-left), so that a building turned
 * away from north shows its plan turned with it: Leaflet's own image overlay is always axis-aligned. The image
 * keeps its natural size and one CSS matrix maps its corners onto the map's layer points.
 */
function rotatedPlan(url, topLeft, topRight, bottomLeft, options) {
  const L = window.L;
  const Rotated = L.ImageOverlay.extend({
    onAdd(map) {
      L.ImageOverlay.prototype.onAdd.call(this, map);
      this._image.addEventListener('load', () => this._reset());
    },
    _animateZoom() {
      this._image.style.visibility = 'hidden'; // redrawn at zoomend: a matrix cannot follow Leaflet's animation
    },
    getEvents() {
      return { zoom: this._reset, viewreset: this._reset, zoomend: this._reset };
    },
    _reset() {
      const image = this._image;
      if (!image || !this._map) return;
      const width = image.naturalWidth || 1000;
      const height = image.naturalHeight || 1000;
      const tl = this._map.latLngToLayerPoint(L.latLng(topLeft));
      const tr = this._map.latLngToLayerPoint(L.latLng(topRight));
      const bl = this._map.latLngToLayerPoint(L.latLng(bottomLeft));
      image.style.width = `${width}px`;
      image.style.height = `${height}px`;
      image.style.transformOrigin = '0 0';
      const a = (tr.x - tl.x) / width;
      const b = (tr.y - tl.y) / width;
      const c = (bl.x - tl.x) / height;
      const d = (bl.y - tl.y) / height;
      image.style.transform = `matrix(${a}, ${b}, ${c}, ${d}, ${tl.x}, ${tl.y})`;
      image.style.visibility = '';
    },
  });
  const bounds = L.latLngBounds([topLeft, topRight, bottomLeft]);
  return new Rotated(url, bounds, options);
}

/** The incident's map: base tiles only when configured; floor plan, rooms, marker and accuracy circle always. */
class IncidentMap {
  constructor(element, config) {
    const L = window.L;
    this.map = L.map(element, { maxZoom: MAP_MAX_ZOOM, zoomSnap: 0.25, worldCopyJump: false });
    if (config.tile_url) {
      const nativeZoom = Number(config.tile_max_zoom) || 19;
      L.tileLayer(config.tile_url, { maxNativeZoom: nativeZoom, maxZoom: MAP_MAX_ZOOM, attribution: config.tile_attribution || '' }).addTo(this.map);
    }
    this.tiles = Boolean(config.tile_url);
    element.classList.toggle('has-tiles', this.tiles);
    this.map.createPane('plan');
    L.control.scale({ imperial: false }).addTo(this.map);
    this.layers = L.featureGroup().addTo(this.map);
    this.key = null;
  }

  destroy() {
    this.map.remove();
  }

  /** Redraws when the location or the site changed; keeps the user's pan and zoom otherwise. */
  show(doc, site, note) {
    const key = JSON.stringify([doc.location, doc.device?.site, site?.id ?? null, Boolean(site)]);
    if (key === this.key) return;
    this.key = key;
    const L = window.L;
    this.layers.clearLayers();
    const notes = [];
    const fit = [];
    const place = placeOf(doc);
    const point = coordinates(doc);
    const accuracy = doc.location?.properties?.accuracy_m;

    const floor = site && place ? findFloor(site, place.building, place.floor) : null;
    if (site?.shape && !floor) {
      const shape = L.geoJSON(site.shape, { style: () => ({ className: 'site-shape', interactive: false }) });
      this.layers.addLayer(shape);
      if (!point) fit.push(shape.getBounds());
    }
    if (floor) {
      const corners = Array.isArray(floor.plan_corners) ? floor.plan_corners.filter((c) => Array.isArray(c) && c.length >= 2) : [];
      if (floor.plan_url && corners.length === 4) {
        const bounds = L.latLngBounds(corners.map(([lat, lon]) => [lat, lon]));
        const [topLeft, topRight, , bottomLeft] = corners;
        const plan = rotatedPlan(floor.plan_url, topLeft, topRight, bottomLeft, {
          pane: 'plan', className: 'floor-plan', interactive: false, alt: `Floor plan: ${floor.name || `floor ${floor.number}`}`,
        });
        plan.on('error', () => this.note('The floor plan image could not be loaded.'));
        this.layers.addLayer(plan);
        fit.push(bounds);
      } else {
        notes.push('No floor plan image for this floor.');
      }
      for (const room of floor.rooms || []) {
        if (!room?.polygon) continue;
        const highlighted = place.room !== null && place.room !== undefined && String(room.id) === String(place.room);
        const layer = L.geoJSON(room.polygon, {
          style: () => ({ className: highlighted ? 'room room-highlight' : 'room', weight: highlighted ? 4 : 1 }),
        });
        const label = h('span', {}, room.name ? `${room.id} ${room.name}` : String(room.id));
        layer.bindTooltip(label, highlighted && !point
          ? { permanent: true, direction: 'center', className: 'room-label-highlight' }
          : { sticky: true, className: highlighted ? 'room-label-highlight' : '' });
        this.layers.addLayer(layer);
        if (highlighted) fit.push(layer.getBounds());
      }
      if (!floor.rooms?.length) notes.push('No rooms drawn for this floor.');
    } else if (place?.building && place?.floor !== null && place?.floor !== undefined && site) {
      notes.push(`Building ${place.building}, floor ${place.floor} is not in the site map.`);
    }

    if (point) {
      const latlng = L.latLng(point.lat, point.lon);
      if (Number.isFinite(accuracy) && accuracy > 0) {
        this.layers.addLayer(L.circle(latlng, { radius: accuracy, className: 'accuracy', interactive: false }));
        if (accuracy <= FIT_MAX_RADIUS_M) fit.push(circleBounds(point, accuracy));
        else notes.push(`The accuracy circle (${accuracy} m) is larger than the view.`);
      }
      this.layers.addLayer(L.marker(latlng, { title: wearerName(doc), alt: `Position of ${wearerName(doc)}`, keyboard: false }));
      fit.push(L.latLngBounds([latlng, latlng]));
    } else if (doc.location && place?.room) {
      notes.push('Placed in a room only: no coordinates.');
    } else if (!doc.location) {
      notes.push('No position known.');
    }
    if (note) notes.push(note);
    if (!this.tiles) {
      notes.push('Street map not configured: showing the site map only.');
    }
    this.notes = notes;
    $('#map-note').textContent = notes.join(' ');

    if (fit.length) {
      const bounds = fit.reduce((all, b) => all.extend(b), L.latLngBounds(fit[0].getSouthWest(), fit[0].getNorthEast()));
      this.map.fitBounds(bounds, { padding: [24, 24], maxZoom: 20 });
    } else {
      this.map.setView([0, 0], 1);
    }
  }

  note(text) {
    this.notes = [...(this.notes || []), text];
    $('#map-note').textContent = this.notes.join(' ');
  }
}

function circleBounds(point, radius) {
  const L = window.L;
  const dLat = radius / M_PER_DEG;
  const dLon = radius / (M_PER_DEG * Math.max(0.01, Math.cos((point.lat * Math.PI) / 180)));
  return L.latLngBounds([point.lat - dLat, point.lon - dLon], [point.lat + dLat, point.lon + dLon]);
}

function findFloor(site, building, number) {
  if (building === null || building === undefined || number === null || number === undefined) return null;
  const b = (site.buildings || []).find((item) => String(item.id) === String(building));
  return b?.floors?.find((f) => Number(f.number) === Number(number)) || null;
}

let mapToken = 0;

async function drawMap(doc) {
  if (!window.L) {
    $('#map-note').textContent = 'The map library did not load.';
    return;
  }
  const token = ++mapToken;
  await app.ready;
  const siteId = placeOf(doc)?.site || doc.device?.site;
  let site = null;
  let note = null;
  if (siteId) {
    try {
      site = await siteDocument(siteId);
    } catch (error) {
      note = `The site map could not be loaded (${error.detail || error.message}).`;
    }
  }
  if (token !== mapToken || app.route.view !== 'detail' || app.route.id !== doc.alert_id) return;
  if (!app.incidentMap) app.incidentMap = new IncidentMap($('#map'), app.config);
  app.incidentMap.show(doc, site, note);
}

// --- timeline ------------------------------------------------------------------------------------------------------

function channelName(channel) {
  return CHANNELS[channel] || channel || '?';
}

/** What an event says, for people; unknown types show their fields. */
function describeEvent(event) {
  const d = event.detail || {};
  switch (event.type) {
    case 'raised':
      return `Alert raised (arrived over ${channelName(d.transport)}${d.delayed ? ', delayed' : ''})`;
    case 'signal':
      return `Same press arrived again over ${channelName(d.transport)}`;
    case 'notifying':
      return `Escalation started${d.policy ? ` (policy ${d.policy})` : ''}`;
    case 'step-started': {
      const who = d.channel === 'mqtt' ? '' : ` to ${names(d.targets) || 'nobody'}`;
      const wait = Number.isFinite(d.wait_s) ? `, waits ${Math.round(d.wait_s)} s` : '';
      const skipped = names(d.not_sent) ? `; not sent (message cap): ${names(d.not_sent)}` : '';
      return `Step ${(d.step ?? 0) + 1}: ${channelName(d.channel)}${who}${wait}${skipped}`;
    }
    case 'step-ended':
      return `Step ${(d.step ?? 0) + 1} ended without acknowledgement (${d.why === 'timeout' ? 'time ran out' : d.why === 'all-final' ? 'every SMS and call failed or went unanswered' : d.why || '?'})`;
    case 'send-result':
      return `${channelName(d.channel)} to ${d.to || '?'}: ${d.outcome || '?'}${d.detail ? ` (${d.detail})` : ''}`;
    case 'cap-reached':
      return `Message cap reached (${d.max_messages ?? '?'} messages): no more SMS or calls`;
    case 'exhausted':
      return d.text || `Nobody acknowledged: told ${names(d.broadcast_to) || 'nobody'}`;
    case 'acknowledged':
      return `Acknowledged by ${d.by || d.operator || '?'}${d.via ? ` via ${channelName(d.via)}` : ''}${d.note ? `: “${d.note}”` : ''}`;
    case 'cancelled':
      return `Cancelled by ${d.by || 'the wearer'}; everyone notified is told to stand down`;
    case 'resolved':
      return `Resolved (${REASONS[d.reason] || d.reason || '?'})${d.by ? ` by ${d.by}` : ''}${d.note ? `: “${d.note}”` : ''}`;
    case 'located': {
      const accuracy = Number.isFinite(d.accuracy_m) ? ` ± ${d.accuracy_m} m` : '';
      return `Located: ${d.place || 'no place'} (${SOURCES[d.source] || d.source || '?'}${accuracy})${d.why ? ` — ${d.why}` : ''}`;
    }
    case 'followup-failed':
      return `BLE follow-up failed${d.reason ? `: ${d.reason}` : ''}; the alert stands`;
    case 'note':
      return `Note${d.by || d.operator ? ` by ${d.by || d.operator}` : ''}: “${d.text ?? d.note ?? ''}”`;
    default: {
      const fields = Object.entries(d).map(([k, v]) => `${k}: ${typeof v === 'object' ? JSON.stringify(v) : v}`).join(', ');
      return `${capitalise(event.type || 'event')}${fields ? ` (${fields})` : ''}`;
    }
  }
}

/** How an event is marked in the timeline (colour plus its type as text). */
function eventTone(event) {
  const d = event.detail || {};
  if (event.type === 'send-result') {
    if (GOOD_STATUSES.has(d.outcome)) return 'good';
    if (BAD_STATUSES.has(d.outcome)) return 'bad';
    return 'neutral';
  }
  return { raised: 'alarm', exhausted: 'alarm', acknowledged: 'good', resolved: 'good', cancelled: 'neutral', 'step-ended': 'bad', 'cap-reached': 'bad', 'followup-failed': 'bad' }[event.type] || 'neutral';
}

function renderEvents(doc) {
  const list = $('#timeline-events');
  list.replaceChildren();
  const events = [...doc.events].sort((a, b) => (a.revision ?? 0) - (b.revision ?? 0));
  if (!events.length) list.append(h('li', { class: 'hint' }, 'Nothing yet.'));
  for (const event of events) {
    list.append(h('li', { class: `event tone-${eventTone(event)}`, dataset: { type: event.type || '' } },
      h('span', { class: 'event-time' }, timeElement(event.at, doc.time_zone, 'time', false)),
      h('span', { class: 'event-type' }, event.type || 'event'),
      h('span', { class: 'event-text' }, describeEvent(event))));
  }
}

function statusTone(status) {
  if (GOOD_STATUSES.has(status)) return 'good';
  if (BAD_STATUSES.has(status)) return 'bad';
  return 'neutral';
}

function cell(label, ...content) {
  return h('td', { dataset: { label } }, h('div', { class: 'cell-value' }, ...content));
}

function renderNotifications(doc) {
  const body = $('#notifications tbody');
  body.replaceChildren();
  $('#notifications-empty').hidden = doc.notifications.length > 0;
  $('#notifications').hidden = doc.notifications.length === 0;
  const purposes = { alert: 'Alert', broadcast: 'Nobody answered', cancelled: 'Stand down' };
  for (const n of doc.notifications) {
    body.append(h('tr', {},
      cell('Step', n.step === -1 ? '—' : String((n.step ?? 0) + 1)),
      cell('How', channelName(n.channel)),
      cell('To', n.to || '—'),
      cell('Number', h('span', { class: 'phone' }, n.phone || '—')),
      cell('Purpose', purposes[n.purpose] || n.purpose || '—'),
      cell('Status', h('span', { class: `status tone-${statusTone(n.status)}` }, n.status || '?'), n.error ? h('span', { class: 'status-error' }, ` ${n.error}`) : null),
      cell('Attempts', String(n.attempts ?? '—')),
      cell('Updated', timeElement(n.updated_at, doc.time_zone, 'short', false))));
  }
}

// --- actions -------------------------------------------------------------------------------------------------------

async function acknowledge(id) {
  if (!id) return;
  if (!can('acknowledge')) {
    showError('', new ApiError(403, 'Your role may not acknowledge alerts.'));
    return;
  }
  const doc = app.incidents.get(id);
  const button = $('#ack-button');
  const inDetail = app.route.view === 'detail' && app.route.id === id;
  if (inDetail) {
    button.dataset.busy = 'true';
    button.disabled = true;
  }
  try {
    const result = await api(`/v1/incidents/${encodeURIComponent(id)}/ack`, { method: 'POST', body: {} });
    clearError();
    const who = doc ? wearerName(doc) : id;
    showStatus(result?.result === 'already-acknowledged' ? `${who}: already acknowledged.` : `Acknowledged: ${who}.`);
  } catch (error) {
    showError('Could not acknowledge', error);
  } finally {
    delete button.dataset.busy;
    if (app.route.view === 'detail' && app.route.id === id) await loadDetail(id);
  }
}

async function resolve(event) {
  event.preventDefault();
  const id = app.route.id;
  const form = event.currentTarget;
  if (!id || !form.reportValidity()) return;
  const reason = form.elements.reason.value;
  const note = form.elements.note.value.trim();
  const submit = $('button[type="submit"]', form);
  submit.disabled = true;
  try {
    await api(`/v1/incidents/${encodeURIComponent(id)}/resolve`, { method: 'POST', body: note ? { reason, note } : { reason } });
    clearError();
    form.reset();
    showStatus(`Resolved (${REASONS[reason] || reason}).`);
  } catch (error) {
    showError('Could not resolve', error);
  } finally {
    submit.disabled = false;
    if (app.route.id === id) await loadDetail(id);
  }
}

async function addNote(event) {
  event.preventDefault();
  const id = app.route.id;
  const form = event.currentTarget;
  const text = form.elements.text.value.trim();
  if (!id) return;
  if (!text) {
    form.elements.text.value = '';
    form.reportValidity();
    return;
  }
  const submit = $('button[type="submit"]', form);
  submit.disabled = true;
  try {
    await api(`/v1/incidents/${encodeURIComponent(id)}/notes`, { method: 'POST', body: { text } });
    clearError();
    form.reset();
    showStatus('Note added.');
  } catch (error) {
    showError('Could not add the note', error);
  } finally {
    submit.disabled = false;
    if (app.route.id === id) await loadDetail(id);
  }
}

function focusResolve() {
  const form = $('#resolve-form');
  if (form.hidden) {
    showStatus(can('resolve') ? 'This alert is resolved already.' : 'Your role may not resolve alerts.');
    return;
  }
  form.elements.reason.focus();
  form.scrollIntoView({ block: 'nearest' });
}

// --- sites view ----------------------------------------------------------------------------------------------------

function renderSites() {
  const container = $('#sites');
  const open = sortedIncidents().filter((d) => !stateInfo(d.state).closed);
  const groups = new Map();
  for (const site of app.siteList.values()) groups.set(site.id, []);
  for (const doc of open) {
    const id = incidentSite(doc) || '';
    if (!groups.has(id)) groups.set(id, []);
    groups.get(id).push(doc);
  }
  const ordered = [...groups.entries()].sort(([a, da], [b, db]) => db.length - da.length || siteName(a).localeCompare(siteName(b)));
  container.replaceChildren();
  if (!ordered.length) container.append(h('p', { class: 'empty' }, 'No sites and no open alerts.'));
  for (const [id, docs] of ordered) {
    const site = app.siteList.get(id);
    const title = id ? siteName(id) : 'Unknown site';
    const list = h('ol', { class: 'board site-board' });
    for (const doc of docs) list.append(incidentRow(doc));
    container.append(h('section', { class: `site-group${docs.length ? ' has-open' : ''}`, dataset: { siteId: id } },
      h('h2', {}, title, ' ', h('span', { class: 'count' }, `${docs.length} open`)),
      site?.time_zone ? h('p', { class: 'hint' }, `Local time zone: ${site.time_zone}`) : null,
      docs.length ? list : h('p', { class: 'hint' }, 'No open alerts.')));
  }
}

// --- devices -------------------------------------------------------------------------------------------------------

const devices = { cursor: null, q: '', token: 0 };

const CERT_LABELS = { valid: 'VALID', expiring: 'EXPIRING', expired: 'EXPIRED', revoked: 'REVOKED' };

function siteZone(siteId) {
  return app.siteList.get(siteId)?.time_zone || null;
}

function deviceRow(device) {
  const cert = device.certificate || {};
  const status = cert.status || 'unknown';
  const zone = siteZone(device.site);
  const certDetail = status === 'revoked'
    ? `${cert.revoked_at ? `on ${formatTime(cert.revoked_at, zone)}` : ''}${cert.revoked_reason ? `: ${cert.revoked_reason}` : ''}`
    : cert.not_after ? `until ${formatTime(cert.not_after, zone)}` : '';
  const revoke = can('revoke_device') && status !== 'revoked'
    ? h('button', { type: 'button', class: 'revoke danger', dataset: { deviceId: device.device_id } }, 'Revoke')
    : null;
  const rssi = Number.isFinite(device.nearest_rssi) ? ` (${device.nearest_rssi} dBm)` : '';
  return h('tr', { dataset: { deviceId: device.device_id } },
    cell('Device', h('code', {}, device.device_id)),
    cell('Wearer', device.wearer || '—'),
    cell('Site', siteName(device.site) || '—'),
    cell('Last seen', device.last_seen_at
      ? [h('strong', {}, relativeElement(device.last_seen_at)), h('br'), h('time', { datetime: device.last_seen_at, class: 'when-abs' }, formatTime(device.last_seen_at, zone, 'short'))]
      : 'never'),
    cell('Battery', batteryElement(device.battery, true)),
    cell('Nearest receiver', device.nearest_receiver ? `${device.nearest_receiver}${rssi}` : '—'),
    cell('Certificate', h('span', { class: `badge cert-${CERT_LABELS[status] ? status : 'unknown'}` }, CERT_LABELS[status] || status.toUpperCase()),
      certDetail ? h('span', { class: 'cert-detail' }, ` ${certDetail}`) : null),
    cell('Actions', revoke));
}

async function loadDevices({ reset = false } = {}) {
  const token = ++devices.token;
  const body = $('#devices tbody');
  const more = $('#devices-more');
  const status = $('#devices-status');
  if (reset) {
    devices.cursor = null;
    devices.q = $('#devices-q').value.trim();
  }
  const params = new URLSearchParams({ limit: String(DEVICES_PAGE) });
  if (devices.q) params.set('q', devices.q);
  if (!reset && devices.cursor) params.set('cursor', devices.cursor);
  status.textContent = 'Loading…';
  more.disabled = true;
  try {
    const page = await api(`/v1/devices?${params}`);
    if (token !== devices.token) return;
    if (reset) body.replaceChildren();
    for (const device of page?.items || []) body.append(deviceRow(device));
    devices.cursor = page?.next_cursor || null;
    more.hidden = !devices.cursor;
    const count = body.children.length;
    status.textContent = count ? `${count} device${count === 1 ? '' : 's'}${devices.cursor ? ', more below' : ''}.` : 'No devices match.';
  } catch (error) {
    if (token !== devices.token) return;
    status.textContent = '';
    showError('Could not load the devices', error);
  } finally {
    more.disabled = false;
  }
}

async function revokeDevice(button) {
  const id = button.dataset.deviceId;
  // eslint-disable-next-line no-alert -- a native dialog is keyboard- and screen-reader-friendly and blocks mistakes.
  const reason = window.prompt(`Revoke device ${id}? Its alerts will be refused from now on.\n\nReason:`, '');
  if (reason === null) return;
  if (!reason.trim()) {
    showError('', new ApiError(0, 'Revoking a device needs a reason.'));
    return;
  }
  button.disabled = true;
  try {
    const device = await api(`/v1/devices/${encodeURIComponent(id)}/revoke`, { method: 'POST', body: { reason: reason.trim() } });
    clearError();
    const row = button.closest('tr');
    if (device?.device_id && row) row.replaceWith(deviceRow(device));
    showStatus(`Device ${id} revoked.`);
  } catch (error) {
    button.disabled = false;
    showError(`Could not revoke ${id}`, error);
  }
}

// --- receivers -----------------------------------------------------------------------------------------------------

async function loadReceivers() {
  const body = $('#receivers tbody');
  const status = $('#receivers-status');
  status.textContent = 'Loading…';
  try {
    const items = await fetchAll('/v1/receivers');
    body.replaceChildren();
    for (const r of items) {
      const zone = siteZone(r.site);
      const place = [siteName(r.site), r.building && `building ${r.building}`,
        r.floor !== null && r.floor !== undefined && `floor ${r.floor}`, r.room && `room ${r.room}`].filter(Boolean).join(', ');
      const xy = Number.isFinite(r.x) && Number.isFinite(r.y) ? ` (x ${r.x}, y ${r.y} m)` : '';
      const state = r.status === 'up' || r.status === 'down' ? r.status : 'unknown';
      body.append(h('tr', { dataset: { receiver: r.name } },
        cell('Name', h('code', {}, r.name)),
        cell('Place', (place || '—') + xy),
        cell('Status', h('span', { class: `badge receiver-${state}` }, String(r.status || 'unknown').toUpperCase())),
        cell('Error', r.error || '—'),
        cell('Updated', r.updated_at ? timeElement(r.updated_at, zone, 'short') : '—')));
    }
    status.textContent = items.length ? `${items.length} receiver${items.length === 1 ? '' : 's'}.` : 'No receivers configured.';
  } catch (error) {
    status.textContent = '';
    showError('Could not load the receivers', error);
  }
}

// --- keyboard ------------------------------------------------------------------------------------------------------

function isTyping(target) {
  if (!(target instanceof Element)) return false;
  if (target.isContentEditable) return true;
  if (target.closest('textarea, select')) return true;
  if (target.tagName === 'INPUT') {
    return !['button', 'submit', 'reset', 'checkbox', 'radio', 'range', 'color', 'file', 'image'].includes(target.type);
  }
  return false;
}

function toggleHelp(show) {
  const help = $('#shortcuts-help');
  const visible = show ?? help.hidden;
  help.hidden = !visible;
  $('#help-toggle').setAttribute('aria-expanded', String(visible));
  if (visible) $('#help-close').focus();
}

let chordTimer = null;
let chord = false;

function onKeyDown(event) {
  if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
  if (isTyping(event.target)) {
    if (event.key === 'Escape') event.target.blur();
    return;
  }
  const key = event.key;
  if (chord) {
    chord = false;
    clearTimeout(chordTimer);
    const target = { b: '#/', d: '#/devices', r: '#/receivers', s: '#/sites' }[key];
    if (target) {
      event.preventDefault();
      navigate(target);
    }
    return;
  }
  const onBoard = app.route.view === 'board' || app.route.view === 'detail';
  switch (key) {
    case 'j':
    case 'ArrowDown':
    case 'k':
    case 'ArrowUp':
      if (!onBoard) return;
      event.preventDefault();
      moveSelection(key === 'j' || key === 'ArrowDown' ? 1 : -1);
      break;
    case 'Enter':
      if (event.target instanceof Element && event.target.closest('a, button, summary, [role="button"]')) return;
      if (onBoard && app.selectedId) {
        event.preventDefault();
        navigate(`#/incidents/${encodeURIComponent(app.selectedId)}`);
      }
      break;
    case 'a': {
      const id = app.route.view === 'detail' ? app.route.id : onBoard ? app.selectedId : null;
      if (id) {
        event.preventDefault();
        acknowledge(id);
      }
      break;
    }
    case 'r':
      if (app.route.view === 'detail') {
        event.preventDefault();
        focusResolve();
      } else if (app.route.view === 'board' && app.selectedId) {
        event.preventDefault();
        focusResolveOnLoad = true;
        navigate(`#/incidents/${encodeURIComponent(app.selectedId)}`);
      }
      break;
    case 'Escape':
      if (!$('#shortcuts-help').hidden) {
        toggleHelp(false);
        $('#help-toggle').focus();
      } else if (app.route.view !== 'board') {
        event.preventDefault();
        navigate('#/');
      }
      break;
    case 'g':
      chord = true;
      chordTimer = setTimeout(() => { chord = false; }, CHORD_MS);
      break;
    case '?':
      event.preventDefault();
      toggleHelp();
      break;
    default:
  }
}

// --- start ---------------------------------------------------------------------------------------------------------

function readConfig() {
  app.csrf = document.querySelector('meta[name="csrf-token"]')?.content || '';
  try {
    const config = JSON.parse(document.querySelector('meta[name="console-config"]')?.content || '{}');
    app.config = config && typeof config === 'object' ? { ...config, ...(config.console || {}) } : {};
  } catch {
    app.config = {};
  }
  app.permissions = new Set(ROLE_PERMISSIONS[document.body.dataset.role] || ['view']);
  if (Array.isArray(app.config.permissions)) app.permissions = new Set(app.config.permissions);
}

function wireEvents() {
  window.addEventListener('hashchange', applyRoute);
  document.addEventListener('keydown', onKeyDown);
  $('#ack-button').addEventListener('click', () => acknowledge(app.route.id));
  $('#resolve-form').addEventListener('submit', resolve);
  $('#note-form').addEventListener('submit', addNote);
  $('#message-dismiss').addEventListener('click', () => {
    clearError();
    $('#main').focus({ preventScroll: true });
  });
  $('#sound-toggle').addEventListener('click', () => sound?.enable());
  $('#mute-toggle').addEventListener('click', () => sound?.setMuted(!sound.muted));
  $('#notify-toggle').addEventListener('click', askNotificationPermission);
  $('#help-toggle').addEventListener('click', () => toggleHelp());
  $('#help-close').addEventListener('click', () => {
    toggleHelp(false);
    $('#help-toggle').focus();
  });
  $('#board').addEventListener('click', (event) => {
    const row = event.target.closest('[data-alert-id]');
    if (row) app.selectedId = row.dataset.alertId;
  });
  $('#board').addEventListener('focusin', (event) => {
    const row = event.target.closest('[data-alert-id]');
    if (row && app.selectedId !== row.dataset.alertId) {
      app.selectedId = row.dataset.alertId;
      markSelection();
    }
  });
  $('#devices-filter').addEventListener('submit', (event) => {
    event.preventDefault();
    loadDevices({ reset: true });
  });
  let filterTimer = null;
  $('#devices-q').addEventListener('input', () => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(() => loadDevices({ reset: true }), FILTER_DELAY_MS);
  });
  $('#devices-more').addEventListener('click', () => loadDevices());
  $('#devices').addEventListener('click', (event) => {
    const button = event.target.closest('button.revoke');
    if (button) revokeDevice(button);
  });
  // Any gesture lets the page play sound: use the first one so the alarm is never silently blocked.
  const unlock = () => sound?.enable();
  document.addEventListener('pointerdown', unlock, { passive: true });
  document.addEventListener('keydown', unlock);
  setInterval(() => refreshRelativeTimes(), TICK_MS);
}

async function start() {
  readConfig();
  sound = new AlarmSound(renderSoundControls);
  renderSoundControls(sound);
  renderNotifyButton();
  wireEvents();
  app.ready = Promise.all([loadMe(), loadSiteList()]);
  applyRoute();
  // The stream opens before the lists load so that no change falls between the two; revisions sort out the overlap.
  openStream();
  try {
    await loadBoard();
  } catch (error) {
    if (error.status !== 401) showError('Could not load the alerts', error);
  }
  app.loaded = true;
  await app.ready;
  scheduleRender();
  if (app.route.view === 'detail' && app.detail) renderDetail(app.detail);
  if (app.route.view === 'devices') loadDevices({ reset: true });
  if (app.route.view === 'receivers') loadReceivers();
}

start();
