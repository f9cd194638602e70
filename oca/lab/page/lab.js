// The OCA lab page: play a title through the lab with hls.js (or dash.js), and show which box and pathway
// serve each fragment, the steering priority, the boxes and the control-plane replicas with Stop/Start
// buttons (the lab API).
//
// Rules kept here:
// - The client's site is said with the lab header (X-OCA-Lab-Client) on requests to the control plane only
//   (this page's origin: manifests and steering); requests to boxes carry nothing extra (no CORS preflight).
// - Query parameters choose what to play without clicking: ?title=1001&site=b&player=hls&autoplay=1
//   (site: a, b, site-a or site-b; cmcd=0 turns CMCD off; buffer=N keeps hls.js N seconds ahead, so a
//   failover test sees fragments fetched after the kill).
// - window.labState is the page's account of what happened, for tests: { ready, player, title, site,
//   client, pathway, priority, steering: [{at, priority}], fragments: [{at, url, sn, type, rendition, box,
//   pathway, bytes, ms}], errors: [{at, type, details, fatal}], stalls: [{at, ms}], maxStallMs,
//   firstPlayingMs (performance.now() at the first 'playing': ms since navigation), playing }.
'use strict';

const state = window.labState = {
  ready: false, player: null, title: null, site: null, client: null, pathway: null, priority: null,
  steering: [], fragments: [], errors: [], stalls: [], maxStallMs: 0, firstPlayingMs: null, playing: false,
};
const MAX_ROWS = 300;
let lab = null;          // GET /api/lab
let apiUrl = null;
let current = null;      // the running player: {kind, instance}
const $ = (id) => document.getElementById(id);
const now = () => new Date().toISOString().slice(11, 23);

function notice(text) {
  const el = $('notice');
  el.textContent = text;
  el.hidden = !text;
}

function error(type, details, fatal) {
  state.errors.push({ at: Date.now(), type, details: String(details), fatal: !!fatal });
  const li = document.createElement('li');
  li.textContent = `${now()} ${type}: ${details}${fatal ? ' (fatal)' : ''}`;
  $('errors').prepend(li);
  while ($('errors').children.length > 20) $('errors').lastChild.remove();
}

function boxOf(url) {
  if (!lab) return null;
  let u;
  try { u = new URL(url, location.href); } catch (e) { return null; }
  for (const box of lab.boxes) {
    if (new URL(box.data_url).host === u.host) return box.id;
  }
  if (lab.origin_url && new URL(lab.origin_url).host === u.host) return 'origin';
  return null;
}

function renditionOf(url) {
  const m = /\/titles\/[^/]+\/(.+)\/[^/]+$/.exec(new URL(url, location.href).pathname);
  return m ? m[1] : '?';
}

function setPriority(priority) {
  state.priority = priority ? Array.from(priority) : null;
  state.steering.push({ at: Date.now(), priority: state.priority });
  $('priority').textContent = state.priority ? state.priority.join(' › ') : '-';
}

function setPathway(pathway) {
  if (pathway && pathway !== state.pathway) {
    state.pathway = pathway;
    $('pathway').textContent = pathway;
    return true;
  }
  return false;
}

function fragment(entry) {
  state.fragments.push(entry);
  const switched = setPathway(entry.pathway) && state.fragments.length > 1;
  $('serving').textContent = entry.box || '-';
  const tr = document.createElement('tr');
  if (switched) tr.className = 'switch';
  const cells = [now(), entry.sn, entry.rendition, entry.box || '?', entry.pathway || '-',
    entry.bytes, entry.ms === null ? '-' : Math.round(entry.ms)];
  cells.forEach((value, i) => {
    const td = document.createElement('td');
    td.textContent = value;
    if (i >= 5) td.className = 'num';
    tr.appendChild(td);
  });
  const body = $('fragments').tBodies[0];
  body.prepend(tr);
  while (body.rows.length > MAX_ROWS) body.lastChild.remove();
}

// -- stalls: playback that should advance and does not ------------------------------------------------

function watchStalls(video) {
  let lastTime = -1;
  let lastProgress = performance.now();
  let open = null;
  video.addEventListener('playing', () => {
    state.playing = true;
    if (state.firstPlayingMs === null) state.firstPlayingMs = performance.now();
  });
  setInterval(() => {
    const t = performance.now();
    if (!state.playing || video.paused || video.ended) {
      lastProgress = t;
      open = null;
      return;
    }
    if (video.currentTime !== lastTime) {
      lastTime = video.currentTime;
      lastProgress = t;
      open = null;
    } else if (t - lastProgress > 250) {
      if (!open) {
        open = { at: Date.now(), ms: 0 };
        state.stalls.push(open);
      }
      open.ms = Math.round(t - lastProgress);
      state.maxStallMs = Math.max(state.maxStallMs, open.ms);
    }
    $('stalls').textContent = `${state.stalls.length} (longest ${state.maxStallMs} ms)`;
  }, 100);
}

// -- players --------------------------------------------------------------------------------------------

function controlPlaneUrl(url) {
  return url.startsWith(location.origin + '/');
}

function playHls(video, url, client, cmcd, buffer) {
  const hls = new Hls({
    enableWorker: false,
    cmcd: cmcd ? {} : undefined,
    ...(buffer ? { maxBufferLength: buffer, maxMaxBufferLength: buffer } : {}),
    ...(window.OCA_PLAYERS ? window.OCA_PLAYERS.hls : {}),  // players.js: what README recommends
    xhrSetup(xhr, requestUrl) {
      if (!controlPlaneUrl(requestUrl)) return;
      if (xhr.readyState === 0) xhr.open('GET', requestUrl, true);
      xhr.setRequestHeader(lab.client_header, client);
    },
  });
  hls.on(Hls.Events.STEERING_MANIFEST_LOADED, (_, data) => {
    const manifest = data.steeringManifest || {};
    setPriority(manifest['PATHWAY-PRIORITY'] || hls.pathwayPriority);
  });
  hls.on(Hls.Events.MANIFEST_PARSED, () => {
    setPriority(hls.pathwayPriority || hls.pathways);
    video.play().catch((e) => error('play', e.message, false));
  });
  hls.on(Hls.Events.FRAG_LOADED, (_, data) => {
    const frag = data.frag;
    const stats = frag.stats || {};
    const loading = stats.loading || {};
    const level = frag.type === 'main' ? hls.levels[frag.level] : null;
    const pathway = level ? (level.pathwayId || (level.attrs && level.attrs['PATHWAY-ID'])) : boxOf(frag.url);
    fragment({
      at: Date.now(), url: frag.url, sn: frag.sn, type: frag.type, rendition: renditionOf(frag.url),
      box: boxOf(frag.url), pathway: pathway || null, bytes: stats.loaded || stats.total || 0,
      ms: loading.end && loading.start ? loading.end - loading.start : null,
    });
  });
  hls.on(Hls.Events.ERROR, (_, data) => {
    error(data.type, data.details + (data.response && data.response.code ? ` ${data.response.code}` : ''), data.fatal);
    if (data.fatal && data.type === Hls.ErrorTypes.MEDIA_ERROR) hls.recoverMediaError();
  });
  hls.loadSource(url);
  hls.attachMedia(video);
  return hls;
}

function playDash(video, url, client, cmcd) {
  const player = dashjs.MediaPlayer().create();
  if (window.OCA_PLAYERS) player.updateSettings(window.OCA_PLAYERS.dash);  // players.js: what README recommends
  if (cmcd) player.updateSettings({ streaming: { cmcd: { enabled: true } } });
  player.addRequestInterceptor((request) => {
    if (controlPlaneUrl(request.url)) {
      request.headers = Object.assign({}, request.headers, { [lab.client_header]: client });
    }
    return Promise.resolve(request);
  });
  const events = dashjs.MediaPlayer.events;
  player.on(events.FRAGMENT_LOADING_COMPLETED, (e) => {
    const r = e.request || {};
    if (!r.url) return;
    const began = r.startDate || r.requestStartDate;
    const start = began ? new Date(began).getTime() : null;
    const end = r.requestEndDate ? new Date(r.requestEndDate).getTime() : Date.now();
    fragment({
      at: Date.now(), url: r.url, sn: Number.isFinite(r.index) ? r.index : 'init', type: r.mediaType, rendition: renditionOf(r.url),
      box: boxOf(r.url), pathway: r.serviceLocation || boxOf(r.url), bytes: r.bytesLoaded || 0,
      ms: start && end ? end - start : null,
    });
  });
  if (events.CONTENT_STEERING_REQUEST_COMPLETED) {
    player.on(events.CONTENT_STEERING_REQUEST_COMPLETED, (e) => {
      const data = e.currentSteeringResponseData || {};
      setPriority(data.pathwayPriority || null);
    });
  }
  player.on(events.ERROR, (e) => error('dash', JSON.stringify(e.error || e).slice(0, 200), true));
  player.initialize(video, url, true);
  return player;
}

function stop() {
  if (!current) return;
  if (current.kind === 'hls') current.instance.destroy();
  else current.instance.reset();
  current = null;
}

function play(titleId, siteId, kind, cmcd, buffer) {
  const site = lab.sites.find((s) => s.id === siteId) || lab.sites[0];
  const title = lab.titles.find((t) => t.id === titleId) || lab.titles[0];
  if (kind === 'dash' && !window.dashjs) return notice('dash.js is not installed: run make');
  if (kind !== 'dash' && !window.Hls) return notice('hls.js is not installed: run make');
  stop();
  Object.assign(state, { player: kind, title: title.id, site: site.id, client: site.client, pathway: null });
  const video = $('video');
  const url = kind === 'dash' ? title.mpd : title.master;
  current = { kind, instance: kind === 'dash' ? playDash(video, url, site.client, cmcd) : playHls(video, url, site.client, cmcd, buffer) };
  const params = new URLSearchParams(location.search);
  params.set('title', title.id);
  params.set('site', site.id);
  params.set('player', kind);
  history.replaceState(null, '', `${location.pathname}?${params}`);
}

// -- boxes ----------------------------------------------------------------------------------------------

async function boxAction(boxId, action) {
  const how = action === 'term' ? 'stop?how=term' : action === 'kill' ? 'stop?how=kill' : 'start';
  try {
    const response = await fetch(`${apiUrl}/api/boxes/${encodeURIComponent(boxId)}/${how}`, { method: 'POST' });
    if (!response.ok) error('lab', `${boxId} ${action}: ${response.status}`, false);
  } catch (e) {
    error('lab', `${boxId} ${action}: ${e.message}`, false);
  }
  refresh();
}

function renderBoxes() {
  const body = $('boxes').tBodies[0];
  body.textContent = '';
  for (const box of lab.boxes) {
    const tr = document.createElement('tr');
    const health = box.healthy === true ? 'steered to' : box.healthy === false ? 'out of steering' : '?';
    const cells = [box.id, box.site, new URL(box.data_url).host, box.running ? `running (pid ${box.pid})` : 'stopped', health];
    cells.forEach((value, i) => {
      const td = document.createElement('td');
      td.textContent = value;
      if (i === 3) td.className = box.running ? 'up' : 'down';
      if (i === 4) td.className = box.healthy ? 'up' : 'down';
      tr.appendChild(td);
    });
    const td = document.createElement('td');
    for (const [action, label] of box.running ? [['kill', 'Kill'], ['term', 'Stop']] : [['start', 'Start']]) {
      const button = document.createElement('button');
      button.textContent = label;
      button.dataset.box = box.id;
      button.dataset.action = action;
      button.addEventListener('click', () => boxAction(box.id, action));
      td.appendChild(button);
    }
    tr.appendChild(td);
    body.appendChild(tr);
  }
}

// -- control-plane replicas (one by default; N behind HAProxy with --control-replicas N) ------------------

async function replicaAction(index, action) {
  const how = action === 'term' ? 'stop?how=term' : action === 'kill' ? 'stop?how=kill' : 'start';
  try {
    const response = await fetch(`${apiUrl}/api/control/${index}/${how}`, { method: 'POST' });
    if (!response.ok) error('lab', `replica ${index} ${action}: ${response.status}`, false);
  } catch (e) {
    error('lab', `replica ${index} ${action}: ${e.message}`, false);
  }
  refresh();
}

function renderReplicas() {
  const replicas = lab.control_replicas || [];
  const balancer = lab.balancer;
  $('balancer').textContent = balancer
    ? `HAProxy on ${new URL(balancer.url).host}, GET /healthz every ${balancer.check_interval_ms} ms`
    : `${new URL(lab.control_url).host}, SQLite`;
  const body = $('replicas').tBodies[0];
  body.textContent = '';
  for (const replica of replicas) {
    const tr = document.createElement('tr');
    const lb = balancer ? (replica.balancer || '?') : '-';
    const leads = replica.leader === true ? 'leader' : replica.leader === false ? '-' : '?';
    const store = replica.state_ok === true ? 'ok' : replica.state_ok === false ? 'unreachable' : '?';
    const cells = [replica.name, new URL(replica.url).host,
      replica.running ? `running (pid ${replica.pid})` : 'stopped', lb, leads, store];
    cells.forEach((value, i) => {
      const td = document.createElement('td');
      td.textContent = value;
      if (i === 2) td.className = replica.running ? 'up' : 'down';
      if (i === 3 && balancer) td.className = lb === 'UP' ? 'up' : 'down';
      if (i === 5) td.className = replica.state_ok ? 'up' : 'down';
      tr.appendChild(td);
    });
    const td = document.createElement('td');
    for (const [action, label] of replica.running ? [['kill', 'Kill'], ['term', 'Stop']] : [['start', 'Start']]) {
      const button = document.createElement('button');
      button.textContent = label;
      button.dataset.replica = String(replica.index);
      button.dataset.action = action;
      button.addEventListener('click', () => replicaAction(replica.index, action));
      td.appendChild(button);
    }
    tr.appendChild(td);
    body.appendChild(tr);
  }
}

async function refresh() {
  try {
    const response = await fetch(`${apiUrl}/api/lab`, { cache: 'no-store' });
    lab = await response.json();
    renderBoxes();
    renderReplicas();
  } catch (e) {
    $('summary').textContent = `the lab API at ${apiUrl} does not answer (is oca lab up still running?)`;
  }
}

function fillSelect(select, items, selected) {
  select.textContent = '';
  for (const [value, label] of items) {
    const option = document.createElement('option');
    option.value = value;
    option.textContent = label;
    option.selected = value === selected;
    select.appendChild(option);
  }
}

function loadScript(src) {
  return new Promise((resolve) => {
    const script = document.createElement('script');
    script.src = src;
    script.onload = () => resolve(true);
    script.onerror = () => resolve(false);
    document.head.appendChild(script);
  });
}

async function main() {
  const config = await (await fetch('/lab/config.json', { cache: 'no-store' })).json();
  apiUrl = config.api_url;
  const missing = [];
  if (config.players.hls) await loadScript('/lab/vendor/hls.min.js'); else missing.push('hls.js');
  if (config.players.dash) await loadScript('/lab/vendor/dash.all.min.js'); else missing.push('dash.js');
  if (missing.length) notice(`${missing.join(' and ')} not installed: run make (it installs the players from npm)`);
  await refresh();
  if (!lab) return;
  const params = new URLSearchParams(location.search);
  const siteParam = params.get('site') || 'site-a';
  const siteId = siteParam.startsWith('site-') ? siteParam : `site-${siteParam}`;
  const titleId = params.get('title') || lab.titles[0].id;
  const kind = params.get('player') === 'dash' ? 'dash' : 'hls';
  fillSelect($('title'), lab.titles.map((t) => [t.id, `${t.id}${t.synthetic ? ' (synthetic)' : ''}`]), titleId);
  fillSelect($('site'), lab.sites.map((s) => [s.id, `${s.id} (${s.client})`]), siteId);
  $('player').value = kind;
  $('summary').textContent = `${lab.boxes.length} boxes in ${lab.sites.length} sites · control plane ${lab.control_url}`;
  const cmcd = params.get('cmcd') !== '0';
  const buffer = Number(params.get('buffer')) || null;
  $('controls').addEventListener('submit', (e) => {
    e.preventDefault();
    play($('title').value, $('site').value, $('player').value, cmcd, buffer);
  });
  watchStalls($('video'));
  setInterval(refresh, 1000);
  state.ready = true;
  if (params.get('autoplay') === '1') play(titleId, siteId, kind, cmcd, buffer);
}

main().catch((e) => { error('page', e.message, true); notice(`the lab page failed: ${e.message}`); });
