// The attnsearch console: collections, search, hits with highlighted
// snippets, a hit's attention map and each search's stage timings. It talks
// only to the JSON API beside it (POST /v1/<Rpc>, protobuf's JSON mapping).
'use strict';

const $ = (id) => document.getElementById(id);

// Marks the server puts around highlighted spans, turned into <mark>
// elements without parsing any HTML. A random nonce per page, so that no
// document's text can hold them (a lone control character could).
const MARK_NONCE = Array.from(crypto.getRandomValues(new Uint8Array(8)),
                              (b) => b.toString(16).padStart(2, '0')).join('');
const MARK_PRE = `\u0002${MARK_NONCE}<`;
const MARK_POST = `>${MARK_NONCE}\u0003`;
// The server's default temperatures (SearchRequest.temperature).
const DEFAULT_TEXT_TEMPERATURE = 0.06;
const DEFAULT_VECTOR_TEMPERATURE = 0.1;
const KEY_STORAGE = 'attnsearch.api_key';

const state = {
  key: sessionStorage.getItem(KEY_STORAGE) || '',
  collections: [],
  lastRequest: null,  // the SearchRequest behind the hits shown
  selected: null,     // the hit whose attention is shown: {id, rank}
  searchSeq: 0,       // orders search answers: only the newest is shown
  attentionSeq: 0,    // orders attention answers: only the newest is drawn
};

class ApiError extends Error {
  constructor(httpStatus, status, message) {
    super(message);
    this.httpStatus = httpStatus;
    this.status = status;
  }
  toString() { return `${this.status}: ${this.message}`; }
}

// ---- The JSON API -------------------------------------------------------

async function call(rpc, request) {
  for (;;) {
    const headers = {'Content-Type': 'application/json'};
    if (state.key) headers.Authorization = `Bearer ${state.key}`;
    let response;
    try {
      response = await fetch(`/v1/${rpc}`, {method: 'POST', headers, body: JSON.stringify(request)});
    } catch (e) {
      throw new ApiError(0, 'UNAVAILABLE', `the server cannot be reached (${e.message})`);
    }
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (response.ok) return body || {};
    const error = (body && body.error) || {};
    const failure = new ApiError(response.status, error.status || `HTTP ${response.status}`,
                                 error.message || response.statusText);
    if (response.status !== 401) throw failure;
    // The server wants a (valid) key: ask, then try again.
    if (!(await askForKey(failure))) throw failure;
  }
}

// ---- API key ----------------------------------------------------------------

let keyDialogOpen = null;  // the pending answer while the dialog is open

function showKeyState() {
  $('key-state').textContent = state.key ? 'Using an API key' : '';
}

// Opens the key dialog; resolves true once the user gave a key, false when
// they cancelled. `failure` is the server's error that asked for it.
function askForKey(failure) {
  $('key-reason').textContent = failure ? 'The server refused the request.' : '';
  $('key-error').textContent = failure ? failure.toString() : '';
  $('key-input').value = '';
  if (keyDialogOpen) return keyDialogOpen;
  const dialog = $('key-dialog');
  keyDialogOpen = new Promise((resolve) => {
    dialog.addEventListener('close', () => {
      keyDialogOpen = null;
      const choice = dialog.returnValue;
      if (choice === 'use' && $('key-input').value.trim()) {
        setKey($('key-input').value.trim());
        resolve(true);
      } else {
        if (choice === 'clear') {
          setKey('');
          clearCollections('The key is forgotten: give one (API key…) to list the collections.');
          clearResults('');
        }
        resolve(false);
      }
    }, {once: true});
  });
  dialog.returnValue = '';
  dialog.showModal();
  $('key-input').focus();
  return keyDialogOpen;
}

// API keys are printable ASCII without spaces (an HTTP header carries them).
const KEY_PATTERN = /^[\x21-\x7e]+$/;

// Keeps the dialog open while its key could not be sent.
function checkKey(event) {
  if (!event.submitter || event.submitter.value !== 'use') return;
  const key = $('key-input').value.trim();
  if (!key) {
    event.preventDefault();
    $('key-error').textContent = 'Key: empty';
  } else if (!KEY_PATTERN.test(key)) {
    event.preventDefault();
    $('key-input').value = '';
    $('key-error').textContent =
        'Key: API keys are printable ASCII without spaces (letters, digits, punctuation)';
  }
}

function setKey(key) {
  state.key = key;
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
  showKeyState();
}

// ---- Formatting -------------------------------------------------------------

// proto3 JSON writes 64-bit integers as strings and leaves out zeros.
const num = (v) => Number(v || 0);
const fmtInt = (v) => num(v).toLocaleString('en-US');
const fmtUs = (us) => (us >= 1000 ? `${(us / 1000).toFixed(us >= 10000 ? 1 : 2)} ms` : `${Math.round(us)} µs`);
const fmtWeight = (w) => (w >= 0.001 || w === 0 ? w.toFixed(3) : w.toExponential(1));

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'text') node.textContent = v;
    else if (k === 'class') node.className = v;
    else if (k === 'dataset') Object.assign(node.dataset, v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

// A snippet with the server's marks as <mark> elements, built from text
// nodes only (a document's text is never parsed as HTML).
function highlighted(snippet) {
  const out = document.createDocumentFragment();
  let rest = snippet;
  for (;;) {
    const begin = rest.indexOf(MARK_PRE);
    if (begin < 0) break;
    const end = rest.indexOf(MARK_POST, begin + MARK_PRE.length);
    if (end < 0) break;
    out.append(rest.slice(0, begin), el('mark', {text: rest.slice(begin + MARK_PRE.length, end)}));
    rest = rest.slice(end + MARK_POST.length);
  }
  out.append(rest);
  return out;
}

// ---- Collections ------------------------------------------------------------

const DTYPE_BYTES = {TOKEN_DTYPE_F32: 4, TOKEN_DTYPE_BF16: 2, TOKEN_DTYPE_INT8: 1};

function bytesPerToken(c) {
  const memory = c.memory || {};
  if (memory.token_arena && num(memory.arena_bytes_per_token) > 0) {
    return `${num(memory.arena_bytes_per_token).toFixed(1)} in memory`;
  }
  const config = c.config || {};
  const dtype = config.token_dtype || 'TOKEN_DTYPE_BF16';
  const bytes = (DTYPE_BYTES[dtype] || 2) * num(config.dim);
  return `${bytes} on disk (${dtype.replace('TOKEN_DTYPE_', '').toLowerCase()})`;
}

function encoderOf(c) {
  if (num(c.encoder_version) === 0) return 'vectors (no text encoder)';
  return `text, version ${c.encoder_version}, ${fmtInt(c.encoder_vocabulary)} words`;
}

function indexOf(c) {
  const config = c.config || {};
  const parts = [config.ann_spec || 'default ANN', `first stage: ${config.candidates_from || 'pooled'}`,
                 `${fmtInt(c.ann_vectors)} vectors`];
  if (num(c.ann_pending) > 0) parts.push(`${fmtInt(c.ann_pending)} pending`);
  if (config.token_codec && config.token_codec.name && config.token_codec.name !== 'rows') {
    parts.push(`codec ${config.token_codec.name}` + (num(c.codec_version) ? ` v${c.codec_version}` : ' (untrained)'));
  }
  if (c.tuned_ann_params) parts.push(`tuned ${c.tuned_ann_params}`);
  if (c.rebuild_in_progress) parts.push('rebuilding');
  return parts.join(' · ');
}

function clearCollections(message) {
  state.collections = [];
  $('collections').tBodies[0].replaceChildren(
      el('tr', {}, [el('td', {colspan: '6', text: message})]));
  $('collection').replaceChildren();
}

async function loadCollections() {
  $('collections-error').textContent = '';
  let answer;
  try {
    answer = await call('ListCollections', {});
  } catch (e) {
    $('collections-error').textContent = e.toString();
    return;
  }
  state.collections = answer.collections || [];
  const body = $('collections').tBodies[0];
  body.replaceChildren();
  const select = $('collection');
  const chosen = select.value;
  select.replaceChildren();
  for (const c of state.collections) {
    const row = el('tr', {class: 'pick', title: `Search ${c.name}`}, [
      el('th', {scope: 'row', text: c.name}),
      el('td', {class: 'num', text: fmtInt(c.num_documents)}),
      el('td', {class: 'num', text: fmtInt(c.num_tombstones)}),
      el('td', {class: 'num', text: bytesPerToken(c)}),
      el('td', {text: encoderOf(c)}),
      el('td', {text: indexOf(c)}),
    ]);
    // A click on a collection's row chooses it for searching.
    row.addEventListener('click', () => {
      select.value = c.name;
      chooseKindFor(c.name);
    });
    body.append(row);
    select.append(el('option', {value: c.name, text: c.name}));
  }
  if (state.collections.length === 0) {
    body.append(el('tr', {}, [el('td', {colspan: '6', text: 'No collections yet.'})]));
  }
  if (chosen && state.collections.some((c) => c.name === chosen)) select.value = chosen;
  // The query's kind follows the collection, unless it is the one chosen
  // before (the user may have switched the kind by hand).
  if (select.value !== chosen) chooseKindFor(select.value);
}

// Text for collections with an encoder, vectors for the rest.
function chooseKindFor(name) {
  const c = state.collections.find((x) => x.name === name);
  if (!c) return;
  const kind = num(c.encoder_version) > 0 ? 'text' : 'vectors';
  document.querySelector(`input[name="kind"][value="${kind}"]`).checked = true;
}

// ---- Search -----------------------------------------------------------------

// The query box's vectors: [[...], ...] token rows or [...] a pooled vector.
function parseVectors(source) {
  let value;
  try {
    value = JSON.parse(source);
  } catch (e) {
    throw new Error(`Query: not JSON (${e.message})`);
  }
  const isVector = (v) => Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === 'number');
  if (isVector(value)) return {pooled: value};
  if (Array.isArray(value) && value.length > 0 && value.every(isVector)) {
    const cols = value[0].length;
    const bad = value.findIndex((row) => row.length !== cols);
    if (bad >= 0) throw new Error(`Query: row ${bad} has ${value[bad].length} values, row 0 has ${cols}`);
    return {tokens: {rows: value.length, cols, values: value.flat()}};
  }
  throw new Error('Query: give an array of numbers or an array of rows of numbers');
}

function optionalNumber(id, name, integer) {
  if ($(id).validity.badInput) throw new Error(`${name}: not a number`);
  const raw = $(id).value.trim();
  if (raw === '') return undefined;
  const v = Number(raw);
  if (!Number.isFinite(v) || v < 0 || (integer && !Number.isInteger(v))) {
    throw new Error(`${name}: ${raw} is not a ${integer ? 'whole ' : ''}number ≥ 0`);
  }
  return v;
}

function buildRequest() {
  const collection = $('collection').value;
  if (!collection) {
    throw new Error($('collections-error').textContent
        ? 'Collection: none could be listed (see the error under Collections)'
        : 'Collection: choose one (none exists yet?)');
  }
  const query = $('query').value.trim();
  if (!query) throw new Error('Query: empty');
  const kind = document.querySelector('input[name="kind"]:checked').value;
  const request = {
    collection,
    top_k: optionalNumber('top-k', 'top_k', true) ?? 10,
    rerank: $('rerank').value,
    explain: true,
    highlight_pre: MARK_PRE,
    highlight_post: MARK_POST,
  };
  if (kind === 'text') request.text = query;
  else request.vectors = parseVectors(query);
  const candidates = optionalNumber('candidates', 'candidates', true);
  if (candidates) request.candidates = candidates;
  const temperature = optionalNumber('temperature', 'temperature', false);
  if (temperature === 0) {
    throw new Error('temperature: give one above 0, or leave it empty for the default (MaxSim is its limit: choose rerank MaxSim)');
  }
  if (temperature !== undefined && request.rerank === 'RERANK_MODE_ATTENTION') {
    request.temperature = temperature;
  }
  if ($('retrieval').value) request.retrieval = $('retrieval').value;
  const diversify = {};
  const similarity = optionalNumber('max-similarity', 'near-duplicates', false);
  if (similarity !== undefined && similarity > 1) {
    throw new Error(`near-duplicates: ${similarity} is not a cosine in [0, 1]`);
  }
  if (similarity) diversify.max_similarity = similarity;
  const field = $('collapse-field').value.trim();
  const perValue = optionalNumber('max-per-value', 'at most', true);
  if (perValue !== undefined && !field) throw new Error('per: name the metadata field to collapse on');
  if (field) {
    diversify.collapse_field = field;
    if (perValue) diversify.max_per_value = perValue;
  }
  if (Object.keys(diversify).length > 0) request.diversify = diversify;
  return request;
}

// What the last search showed is gone: its hits, map and timings.
function clearResults(summary) {
  $('hits').replaceChildren();
  $('hits-summary').textContent = summary;
  $('attention').hidden = true;
  $('timing').hidden = true;
  state.selected = null;
  state.lastRequest = null;
}

async function search(event) {
  event.preventDefault();
  $('search-error').textContent = '';
  let request;
  try {
    request = buildRequest();
  } catch (e) {
    $('search-error').textContent = e.message;
    return;
  }
  // Only the newest search's answer is shown, and no map of an older one.
  const seq = ++state.searchSeq;
  ++state.attentionSeq;
  $('search-button').disabled = true;
  try {
    const answer = await call('Search', request);
    if (seq !== state.searchSeq) return;
    state.lastRequest = request;
    showTiming(answer.timing, 'search');
    showHits(answer, request);
  } catch (e) {
    if (seq !== state.searchSeq) return;
    clearResults('');
    $('search-error').textContent = e.toString();
  } finally {
    if (seq === state.searchSeq) $('search-button').disabled = false;
  }
}

function showHits(answer, request) {
  const hits = answer.hits || [];
  const list = $('hits');
  list.replaceChildren();
  $('attention').hidden = true;
  state.selected = null;
  const sources = answer.sources || {};
  $('hits-summary').textContent = `${hits.length} hit${hits.length === 1 ? '' : 's'} ` +
      `(${sources.retrieval || 'semantic'} retrieval` +
      `${sources.retrieval === 'lexical' ? '' : `, first stage: ${sources.first_stage || 'pooled'}`}` +
      `${num(sources.lexical) ? `, ${sources.lexical} candidate${num(sources.lexical) === 1 ? '' : 's'} from BM25 alone` : ''}` +
      `${num(sources.diversified) ? `, ${sources.diversified} left out by diversification` : ''})`;
  const canMap = request.rerank !== 'RERANK_MODE_NONE';
  hits.forEach((hit, rank) => {
    const head = el('div', {class: 'hit-head'}, [
      el('span', {class: 'hit-id', text: hit.id}),
      el('span', {class: 'hit-score', text: `score ${num(hit.score).toFixed(4)}`}),
      el('span', {class: 'hit-ann', text: `first stage ${num(hit.ann_score).toFixed(4)}`}),
    ]);
    if (num(hit.lexical_score) > 0) {
      head.append(el('span', {class: 'hit-ann', text: `BM25 ${num(hit.lexical_score).toFixed(3)}`}));
    }
    const item = el('li', {class: 'hit', dataset: {id: hit.id}}, [head]);
    if (hit.snippet) item.append(el('p', {class: 'snippet'}, [highlighted(hit.snippet)]));
    else if (hit.matches && hit.matches.length) {
      const words = hit.matches.map((m) => m.document_token_text || `token ${num(m.document_token)}`);
      item.append(el('p', {class: 'snippet', text: `Best matches: ${[...new Set(words)].join(', ')}`}));
    }
    if (canMap) {
      const button = el('button', {type: 'button', class: 'show-attention',
                                   'aria-label': `Attention map of ${hit.id}`, text: 'Attention map'});
      button.addEventListener('click', () => selectHit(hit.id, rank, button));
      head.append(button);
    }
    list.append(item);
  });
}

// ---- Stage timings ----------------------------------------------------------

const STAGES = [['queue_us', 'queue'], ['encode_us', 'encode'], ['ann_us', 'ann'],
                ['fetch_us', 'fetch'], ['rerank_us', 'rerank']];

function showTiming(timing, what) {
  timing = timing || {};
  const total = num(timing.queue_us) + num(timing.total_us);
  const list = $('waterfall');
  list.replaceChildren();
  $('timing-title').textContent = `Stage timings of the last ${what}: ${fmtUs(total)}`;
  let start = 0;
  for (const [field, name] of STAGES) {
    const us = num(timing[field]);
    const bar = el('span', {class: `bar stage-${name}`});
    bar.style.marginLeft = `${total ? (100 * start) / total : 0}%`;
    bar.style.width = `${total ? Math.max((100 * us) / total, 0.3) : 0}%`;
    list.append(el('li', {dataset: {stage: name, us: String(us)}}, [
      el('span', {class: 'stage', text: name}),
      el('span', {class: 'track'}, [bar]),
      el('span', {class: 'us', text: fmtUs(us)}),
    ]));
    start += us;
  }
  $('timing').hidden = false;
}

// ---- Attention --------------------------------------------------------------

// The slider is log10(temperature); its far left is MaxSim.
function sliderTemperature() {
  const v = Number($('attention-temperature').value);
  return v < -3 ? 0 : 10 ** v;
}

// How a temperature reads: "MaxSim" for 0, "the search's" for undefined
// (the server's default).
function temperatureText(t) {
  if (t === 0) return 'MaxSim';
  if (t === undefined) return 'the search\'s temperature';
  return `τ = ${Number(t.toPrecision(2))}`;
}

function showSliderValue(t = sliderTemperature()) {
  const text = temperatureText(t);
  $('attention-temperature-value').textContent = text;
  $('attention-temperature').setAttribute('aria-valuetext', text);
}

function selectHit(id, rank, button) {
  state.selected = {id, rank, button};
  const request = state.lastRequest;
  const maxsim = request.rerank === 'RERANK_MODE_MAXSIM';
  let t = request.temperature;
  if (!t) t = request.text !== undefined ? DEFAULT_TEXT_TEMPERATURE : DEFAULT_VECTOR_TEMPERATURE;
  // The slider starts near the search's temperature; the first map is drawn
  // at exactly the search's, so that it explains the very scores shown.
  $('attention-temperature').value = maxsim
      ? '-3.25' : String(Math.min(0, Math.max(-3, Math.round(Math.log10(t) * 4) / 4)));
  showSliderValue(maxsim ? 0 : request.temperature);
  for (const li of $('hits').children) li.classList.toggle('selected', li.dataset.id === id);
  $('attention').hidden = false;
  $('attention-title').scrollIntoView({block: 'start'});
  $('attention-title').focus({preventScroll: true});
  loadAttention(false);
}

// Asks the server again for the chosen hit's map: the search behind the
// hits with attention maps for its first rank + 1 hits only (the map's
// size grows with every hit asked for), at the search's own temperature
// or, once the slider moved, at the slider's. Should the hit fall below
// that rank at another temperature, asks for the search's whole top_k.
async function loadAttention(fromSlider = true) {
  const selected = state.selected;
  if (!selected || !state.lastRequest) return;
  const base = {...state.lastRequest, attention_map: true, explain: true};
  let t;
  if (!fromSlider) {
    t = base.rerank === 'RERANK_MODE_MAXSIM' ? 0 : base.temperature;
  } else {
    t = sliderTemperature();
    if (t === 0) {
      base.rerank = 'RERANK_MODE_MAXSIM';
      delete base.temperature;
    } else {
      base.rerank = 'RERANK_MODE_ATTENTION';
      base.temperature = t;
    }
  }
  const seq = ++state.attentionSeq;
  $('attention-error').textContent = '';
  let answer;
  let rank = -1;
  try {
    for (const topK of [...new Set([Math.min(selected.rank + 1, base.top_k), base.top_k])]) {
      answer = await call('Search', {...base, top_k: topK});
      if (seq !== state.attentionSeq) return;  // a newer map or search was asked meanwhile
      rank = (answer.hits || []).findIndex((h) => h.id === selected.id);
      if (rank >= 0) break;
    }
  } catch (e) {
    if (seq === state.attentionSeq) $('attention-error').textContent = e.toString();
    return;
  }
  showTiming(answer.timing, 'attention search');
  if (rank < 0) {
    $('attention-summary').textContent = `${selected.id} is not in the top ${base.top_k} at ` +
        `${temperatureText(t)}.`;
    $('heatmap').replaceChildren();
    $('matches').replaceChildren();
    return;
  }
  drawAttention(answer.hits[rank], rank, answer.query_token_texts || [], t);
}

function drawAttention(hit, rank, queryTexts, t) {
  const map = hit.attention || {};
  const m = num(map.query_tokens);
  const n = num(map.document_tokens);
  const weights = map.weights || [];
  const docTexts = map.document_token_texts || [];
  $('attention-title').textContent = `Attention: ${hit.id}`;
  $('attention-summary').textContent =
      `${m} query tokens × ${n} document tokens, rank ${rank + 1}, score ${num(hit.score).toFixed(4)} ` +
      `at ${temperatureText(t)}.`;
  const rowLabel = (i) => queryTexts[i] || `q${i}`;
  const colLabel = (j) => docTexts[j] || `d${j}`;

  // Each query token's contribution to the score (explain's matches).
  const contribution = new Array(m).fill(0);
  const best = new Array(m).fill(null);
  for (const match of hit.matches || []) {
    const i = num(match.query_token);
    if (i < m) {
      contribution[i] += num(match.contribution);
      if (!best[i] || num(match.weight) > num(best[i].weight)) best[i] = match;
    }
  }
  const maxContribution = Math.max(1e-30, ...contribution.map(Math.abs));

  const table = $('heatmap');
  table.replaceChildren();
  table.dataset.temperature = String(t ?? 'default');  // 0: MaxSim
  table.append(el('caption', {class: 'visually-hidden',
                              text: `Attention weights of ${hit.id}: rows are query tokens, columns document tokens`}));
  const head = el('tr', {}, [
    el('th', {scope: 'col', class: 'corner', text: 'query ╲ document'}),
    el('th', {scope: 'col', class: 'contribution-head', text: 'contribution'}),
  ]);
  for (let j = 0; j < n; ++j) {
    head.append(el('th', {scope: 'col', class: 'col-label', title: `document token ${j}`},
                      [el('span', {text: colLabel(j)})]));
  }
  table.append(el('thead', {}, [head]));
  const body = el('tbody');
  for (let i = 0; i < m; ++i) {
    const bar = el('span', {class: 'bar'});
    bar.style.width = `${(100 * Math.abs(contribution[i])) / maxContribution}%`;
    const row = el('tr', {}, [
      el('th', {scope: 'row', class: 'row-label', text: rowLabel(i)}),
      el('td', {class: 'contribution', dataset: {contribution: String(contribution[i])}}, [
        el('span', {class: 'track'}, [bar]),
        el('span', {class: 'value', text: contribution[i].toFixed(4)}),
      ]),
    ]);
    for (let j = 0; j < n; ++j) {
      const w = num(weights[i * n + j]);
      const cell = el('td', {class: 'cell', title: `${rowLabel(i)} → ${colLabel(j)}: ${fmtWeight(w)}`,
                             dataset: {row: String(i), col: String(j), weight: String(w)}});
      // Square root: small weights stay visible next to a dominant one.
      cell.style.backgroundColor = `rgba(37, 99, 235, ${Math.sqrt(Math.max(0, Math.min(1, w))).toFixed(3)})`;
      row.append(cell);
    }
    body.append(row);
  }
  table.append(body);

  const matches = $('matches');
  matches.replaceChildren();
  for (let i = 0; i < m; ++i) {
    const b = best[i];
    const text = b ? `${rowLabel(i)} → ${b.document_token_text || colLabel(num(b.document_token))} ` +
                     `(weight ${fmtWeight(num(b.weight))}, contribution ${contribution[i].toFixed(4)})`
                   : `${rowLabel(i)}: no match`;
    matches.append(el('li', {text}));
  }
}

// ---- Start ------------------------------------------------------------------

let sliderTimer = 0;

document.addEventListener('DOMContentLoaded', () => {
  showKeyState();
  $('refresh').addEventListener('click', loadCollections);
  $('collection').addEventListener('change', (e) => chooseKindFor(e.target.value));
  $('search-form').addEventListener('submit', search);
  $('key-form').addEventListener('submit', checkKey);
  $('query').addEventListener('keydown', (e) => {
    // Enter searches; Shift+Enter starts a new line.
    if (e.key === 'Enter' && !e.shiftKey) {
      e.preventDefault();
      $('search-form').requestSubmit();
    }
  });
  $('key-button').addEventListener('click', async () => {
    if (await askForKey(null)) loadCollections();
  });
  $('attention-temperature').addEventListener('input', () => {
    showSliderValue();
    clearTimeout(sliderTimer);
    sliderTimer = setTimeout(loadAttention, 150);
  });
  loadCollections();
});
