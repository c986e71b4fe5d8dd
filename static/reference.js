/* AstrBot API reference: renders the same-origin OpenAPI 3.1 document at /api/v1/openapi.json
 * and lets the reader try each operation. No dependencies, no build step, nothing fetched
 * from anywhere but this origin. All untrusted text reaches the DOM through Text nodes. */
'use strict';
(() => {
  const SPEC_URL = '/api/v1/openapi.json';
  const API_PREFIX = '/api/v1';
  const HTTP_METHODS = ['get', 'post', 'put', 'patch', 'delete', 'head', 'options', 'trace'];
  const BODY_METHODS = new Set(['post', 'put', 'patch', 'delete']);
  const NOTABLE = new Set(['ratelimit', 'ratelimit-policy', 'retry-after', 'x-ratelimit-limit',
    'x-ratelimit-remaining', 'x-ratelimit-reset']);
  const SESSION_KEY = 'astrbot.reference.credential';
  const KEY_VAR = '$ASTRBOT_KEY';
  const REASONS = {
    200: 'OK', 201: 'Created', 202: 'Accepted', 204: 'No Content', 301: 'Moved Permanently',
    302: 'Found', 304: 'Not Modified', 307: 'Temporary Redirect', 308: 'Permanent Redirect',
    400: 'Bad Request', 401: 'Unauthorized', 403: 'Forbidden', 404: 'Not Found',
    405: 'Method Not Allowed', 406: 'Not Acceptable', 409: 'Conflict', 410: 'Gone',
    411: 'Length Required', 413: 'Content Too Large', 415: 'Unsupported Media Type',
    422: 'Unprocessable Content', 429: 'Too Many Requests', 500: 'Internal Server Error',
    501: 'Not Implemented', 502: 'Bad Gateway', 503: 'Service Unavailable', 504: 'Gateway Timeout',
  };

  const state = {
    spec: null, key: '', carrier: 'bearer', showKey: false, base: '',
    ops: [], opsById: new Map(), groups: [], updaters: new Set(),
  };
  const $ = (id) => document.getElementById(id);

  /* ---------- DOM helpers (no innerHTML anywhere) ---------- */

  const PROPS = new Set(['value', 'checked', 'open', 'hidden', 'disabled', 'selected']);
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v === undefined || v === null || v === false) continue;
        if (k === 'class') el.className = v;
        else if (k === 'text') el.textContent = String(v);
        else if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
        else if (PROPS.has(k)) el[k] = v;
        else el.setAttribute(k, v === true ? '' : String(v));
      }
    }
    add(el, kids);
    return el;
  }
  function add(el, kids) {
    for (const k of kids) {
      if (k === undefined || k === null || k === false) continue;
      if (Array.isArray(k)) add(el, k);
      else if (k instanceof Node) el.append(k);
      else el.append(String(k)); // becomes a Text node: never parsed as HTML
    }
  }
  const badge = (text, cls, title) => h('span', { class: 'badge' + (cls ? ' ' + cls : ''), title }, text);
  const methodBadge = (m) => h('span', { class: `m m-${m}` }, m.toUpperCase());
  const slug = (s) => String(s).toLowerCase().replace(/[^a-z0-9_]+/g, '-').replace(/^-+|-+$/g, '') || 'x';
  const clip = (s, n = 240) => (s.length > n ? s.slice(0, n) + '…' : s);
  const json = (v) => { try { return JSON.stringify(v); } catch { return String(v); } };
  const sq = (s) => "'" + String(s).replace(/'/g, "'\\''") + "'"; // POSIX shell single quotes

  /* Tiny, safe Markdown subset: paragraphs, lists, fenced code, `code`, **bold**, [links](url). */
  function md(text) {
    const frag = document.createDocumentFragment();
    if (text === undefined || text === null || text === '') return frag;
    const lines = String(text).replace(/\r\n?/g, '\n').split('\n');
    let para = [], list = null, i = 0;
    const flush = () => {
      if (para.length) frag.append(h('p', null, inline(para.join(' '))));
      para = [];
      if (list) frag.append(list);
      list = null;
    };
    while (i < lines.length) {
      const line = lines[i];
      if (/^\s*```/.test(line)) {
        flush();
        const code = [];
        for (i++; i < lines.length && !/^\s*```/.test(lines[i]); i++) code.push(lines[i]);
        frag.append(h('pre', null, h('code', null, code.join('\n'))));
      } else if (!line.trim()) {
        flush();
      } else if (/^\s*([-*]|\d+\.)\s+/.test(line)) {
        if (para.length) flush();
        if (!list) list = h(/^\s*\d/.test(line) ? 'ol' : 'ul');
        list.append(h('li', null, inline(line.replace(/^\s*([-*]|\d+\.)\s+/, ''))));
      } else if (/^#{1,6}\s/.test(line)) {
        flush();
        frag.append(h('p', null, h('strong', null, inline(line.replace(/^#+\s*/, '')))));
      } else {
        if (list) flush();
        para.push(line.trim());
      }
      i++;
    }
    flush();
    return frag;
  }
  function inline(text) {
    const out = [];
    const re = /`([^`]+)`|\*\*([^*]+)\*\*|\[([^\]]+)\]\(([^)\s]+)\)/g;
    let last = 0, m;
    while ((m = re.exec(text))) {
      if (m.index > last) out.push(text.slice(last, m.index));
      if (m[1] !== undefined) out.push(h('code', null, m[1]));
      else if (m[2] !== undefined) out.push(h('strong', null, m[2]));
      else if (/^(https?:\/\/|\/(?!\/)|#)/i.test(m[4])) {
        const ext = /^https?:/i.test(m[4]);
        out.push(h('a', { href: m[4], rel: ext ? 'noopener noreferrer' : null }, m[3]));
      } else out.push(m[0]);
      last = re.lastIndex;
    }
    if (last < text.length) out.push(text.slice(last));
    return out;
  }

  /* ---------- OpenAPI helpers ---------- */

  function pointer(ref) {
    if (typeof ref !== 'string' || ref[0] !== '#') return undefined;
    let cur = state.spec;
    if (ref.length <= 1) return cur;
    for (const raw of ref.slice(1).split('/').slice(1)) {
      let seg;
      try { seg = decodeURIComponent(raw); } catch { seg = raw; }
      seg = seg.replace(/~1/g, '/').replace(/~0/g, '~');
      if (cur === null || typeof cur !== 'object' || !Object.prototype.hasOwnProperty.call(cur, seg)) return undefined;
      cur = cur[seg];
    }
    return cur;
  }
  function refName(ref) {
    const last = String(ref).split('/').pop();
    try { return decodeURIComponent(last).replace(/~1/g, '/').replace(/~0/g, '~'); } catch { return last; }
  }
  /* Follow $ref chains; sibling keys next to a $ref (allowed in 3.1) override the target's. */
  function deref(obj) {
    let cur = obj, guard = 0;
    const extras = [];
    while (cur && typeof cur === 'object' && typeof cur.$ref === 'string' && guard++ < 32) {
      const { $ref, ...rest } = cur;
      extras.push(rest);
      const target = pointer($ref);
      if (target === undefined) return Object.assign({ 'x-unresolved': $ref }, ...extras.reverse());
      cur = target;
    }
    if (cur === true || cur === undefined || cur === null) cur = {};
    if (!extras.length) return cur;
    return Object.assign({}, typeof cur === 'object' ? cur : {}, ...extras.reverse());
  }
  /* Merge allOf parts into one schema (properties and required are unioned; own keys win). */
  function flatten(s, depth = 0) {
    if (!s || typeof s !== 'object' || !Array.isArray(s.allOf) || depth > 10) return s;
    const out = {}, props = {}, req = new Set();
    const take = (src, own) => {
      for (const [k, v] of Object.entries(src)) {
        if (k === 'allOf') continue;
        if (k === 'properties' && v && typeof v === 'object') Object.assign(props, v);
        else if (k === 'required' && Array.isArray(v)) v.forEach((r) => req.add(r));
        else if (own || !(k in out)) out[k] = v;
      }
    };
    for (const part of s.allOf) take(flatten(deref(part), depth + 1) || {}, false);
    take(s, true);
    if (Object.keys(props).length) out.properties = props;
    if (req.size) out.required = [...req];
    return out;
  }
  const resolve = (raw) => flatten(deref(raw));
  function jsType(v) {
    if (v === null) return 'null';
    if (Array.isArray(v)) return 'array';
    if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
    return typeof v;
  }
  function typesOf(s) {
    const t = s.type;
    let types = Array.isArray(t) ? t.slice() : (typeof t === 'string' ? [t] : []);
    let nullable = s.nullable === true || types.includes('null');
    types = types.filter((x) => x !== 'null');
    if (!types.length) {
      if (s.properties || (s.additionalProperties && typeof s.additionalProperties === 'object')) types = ['object'];
      else if (s.items || s.prefixItems) types = ['array'];
      else if ('const' in s) types = s.const === null ? [] : [jsType(s.const)];
      else if (Array.isArray(s.enum) && s.enum.length) types = [...new Set(s.enum.filter((v) => v !== null).map(jsType))];
    }
    if (Array.isArray(s.enum) && s.enum.includes(null)) nullable = true;
    return { types, nullable };
  }
  function isNullSchema(raw) {
    const d = deref(raw);
    if ('const' in d) return d.const === null;
    return d.type === 'null' || (Array.isArray(d.type) && d.type.length === 1 && d.type[0] === 'null');
  }
  function shortType(raw, depth = 0) {
    if (raw === undefined || raw === true) return 'any';
    if (raw === false) return 'nothing';
    if (depth > 4) return '…';
    if (raw && typeof raw.$ref === 'string') return refName(raw.$ref);
    const s = resolve(raw);
    const t = typesOf(s);
    if (t.types.length === 1 && t.types[0] === 'array') return 'array of ' + shortType(s.items, depth + 1);
    if (t.types.length) return t.types.join(' | ');
    const v = s.oneOf || s.anyOf;
    if (Array.isArray(v)) return v.filter((x) => !isNullSchema(x)).map((x) => shortType(x, depth + 1)).join(' | ');
    return 'any';
  }

  /* ---------- schema tree ---------- */

  function schemaTree(raw) {
    return h('div', { class: 'schema' }, schemaNode(raw, { name: null, required: false, depth: 0, stack: [] }));
  }
  function kv(label, value) {
    return h('div', { class: 'sn-kv' }, h('span', { class: 'muted' }, label + ': '), h('code', null, clip(json(value))));
  }
  function schemaNode(raw, o) {
    if (raw === false) return h('div', { class: 'sn leaf' }, row(o, 'nothing', null, []));
    if (raw === undefined || raw === null || raw === true) raw = {};
    let stack = o.stack;
    const ref = typeof raw.$ref === 'string' ? raw.$ref : null;
    if (ref) {
      if (stack.includes(ref)) {
        return h('div', { class: 'sn leaf' }, row(o, refName(ref), null, [badge('recursive', 'b-muted')]));
      }
      stack = stack.concat(ref);
    }
    const s = resolve(raw);
    let nullable = !!o.nullable;
    let vkind = null, variants = null;
    for (const k of ['oneOf', 'anyOf']) {
      if (Array.isArray(s[k]) && s[k].length) { vkind = k; variants = s[k]; break; }
    }
    if (variants) {
      const nonNull = variants.filter((v) => !isNullSchema(v));
      if (nonNull.length < variants.length) nullable = true;
      if (nonNull.length === 1 && !s.type && !s.properties && nonNull[0] && typeof nonNull[0] === 'object') {
        // `anyOf: [X, {type: "null"}]` is just "X, nullable".
        const { [vkind]: _drop, ...rest } = s;
        const inner = nonNull[0];
        const merged = typeof inner.$ref === 'string' ? { ...rest, $ref: inner.$ref } : { ...rest, ...inner };
        return schemaNode(merged, { ...o, stack, nullable: true });
      }
      variants = nonNull;
    }
    const t = typesOf(s);
    nullable = nullable || t.nullable;
    let label;
    if (t.types.length === 1 && t.types[0] === 'array') label = 'array of ' + shortType(s.items);
    else if (t.types.length) label = t.types.join(' | ');
    else if (variants) label = vkind === 'oneOf' ? 'one of' : 'any of';
    else if (s['x-unresolved']) label = s['x-unresolved'];
    else label = 'any';

    const badges = [];
    if (nullable) badges.push(badge('nullable', 'b-null'));
    if (s.format) badges.push(badge(String(s.format), 'b-fmt'));
    const c = [];
    if (s.minLength !== undefined) c.push(`minLength ${s.minLength}`);
    if (s.maxLength !== undefined) c.push(`maxLength ${s.maxLength}`);
    if (s.minimum !== undefined) c.push(`≥ ${s.minimum}`);
    if (typeof s.exclusiveMinimum === 'number') c.push(`> ${s.exclusiveMinimum}`);
    if (s.maximum !== undefined) c.push(`≤ ${s.maximum}`);
    if (typeof s.exclusiveMaximum === 'number') c.push(`< ${s.exclusiveMaximum}`);
    if (s.multipleOf !== undefined) c.push(`multiple of ${s.multipleOf}`);
    if (s.minItems !== undefined) c.push(`minItems ${s.minItems}`);
    if (s.maxItems !== undefined) c.push(`maxItems ${s.maxItems}`);
    if (s.uniqueItems) c.push('unique');
    if (s.minProperties !== undefined) c.push(`minProperties ${s.minProperties}`);
    if (s.maxProperties !== undefined) c.push(`maxProperties ${s.maxProperties}`);
    c.forEach((x) => badges.push(badge(x, 'b-muted')));
    if (s.pattern) badges.push(badge('pattern ' + clip(String(s.pattern), 60), 'b-muted'));
    if (s.readOnly) badges.push(badge('read-only', 'b-muted'));
    if (s.writeOnly) badges.push(badge('write-only', 'b-muted'));
    if (s.deprecated) badges.push(badge('deprecated', 'b-warn'));
    if (s['x-unresolved']) badges.push(badge('unresolved $ref', 'b-warn'));

    const meta = [];
    if (s.title && s.title !== o.name && (!ref || s.title !== refName(ref))) meta.push(h('div', { class: 'sn-title' }, s.title));
    if (s.description) meta.push(h('div', { class: 'sn-desc' }, md(s.description)));
    if (Array.isArray(s.enum)) {
      meta.push(h('div', { class: 'sn-enum' }, h('span', { class: 'muted' }, 'values: '),
        s.enum.map((v) => h('code', null, clip(json(v), 80)))));
    }
    if ('const' in s) meta.push(kv('const', s.const));
    if ('default' in s) meta.push(kv('default', s.default));
    if ('example' in s) meta.push(kv('example', s.example));
    else if (Array.isArray(s.examples) && s.examples.length) meta.push(kv(s.examples.length > 1 ? 'examples' : 'example', s.examples.length > 1 ? s.examples : s.examples[0]));

    const kids = [];
    const depth = o.depth + 1;
    if (depth > 14) {
      kids.push(h('div', { class: 'sn leaf muted' }, '… (nested too deep)'));
    } else {
      if (s.properties && typeof s.properties === 'object') {
        const req = new Set(Array.isArray(s.required) ? s.required : []);
        for (const [k, v] of Object.entries(s.properties)) {
          kids.push(schemaNode(v, { name: k, required: req.has(k), depth, stack }));
        }
      }
      const ap = s.additionalProperties;
      if (ap && typeof ap === 'object' && Object.keys(ap).length) {
        kids.push(schemaNode(ap, { name: '{key}', required: false, depth, stack }));
      }
      if (t.types.includes('array') && s.items && typeof s.items === 'object') {
        const it = resolve(s.items);
        if (s.items.$ref || Object.keys(it).some((k) => k !== 'type')) {
          kids.push(schemaNode(s.items, { name: '[item]', required: false, depth, stack }));
        }
      }
      if (variants && variants.length) {
        kids.push(h('div', { class: 'sn-sep' }, vkind === 'oneOf' ? 'exactly one of:' : 'any of:'));
        variants.forEach((v, i) => kids.push(schemaNode(v, { name: `option ${i + 1}`, required: false, depth, stack, variant: true })));
      }
    }
    const head = row(o, label, ref ? refName(ref) : null, badges);
    if (!kids.length) return h('div', { class: 'sn leaf' }, head, meta);
    return h('details', { class: 'sn', open: o.depth < 2 }, h('summary', null, head), meta, h('div', { class: 'sn-kids' }, kids));
  }
  function row(o, label, ref, badges) {
    return h('span', { class: 'sn-row' },
      o.name !== null && o.name !== undefined ? h('span', { class: 'sn-name' + (o.variant ? ' variant' : '') }, o.name) : null,
      h('span', { class: 'sn-type' }, label),
      ref && ref !== label ? h('span', { class: 'sn-ref' }, ref) : null,
      o.required ? h('span', { class: 'sn-req' }, 'required') : null,
      badges);
  }

  /* ---------- example generation ---------- */

  function futureDate() {
    const d = new Date(Date.now() + 30 * 864e5);
    d.setUTCHours(0, 0, 0, 0);
    return d.toISOString().replace('.000Z', 'Z');
  }
  function exampleFor(raw, stack = [], depth = 0) {
    if (raw === undefined || raw === null || raw === false || depth > 10) return undefined;
    if (raw === true) return null;
    if (typeof raw.$ref === 'string') {
      if (stack.includes(raw.$ref)) return undefined;
      stack = stack.concat(raw.$ref);
    }
    const s = resolve(raw);
    if ('example' in s) return s.example;
    if (Array.isArray(s.examples) && s.examples.length) return s.examples[0];
    if ('const' in s) return s.const;
    if ('default' in s) return s.default;
    if (Array.isArray(s.enum) && s.enum.length) return s.enum.find((v) => v !== null) ?? s.enum[0];
    const v = s.oneOf || s.anyOf;
    const t = typesOf(s);
    if (Array.isArray(v) && !t.types.length) {
      const first = v.find((x) => !isNullSchema(x));
      return first === undefined ? null : exampleFor(first, stack, depth + 1);
    }
    switch (t.types[0]) {
      case 'object': {
        const obj = {};
        for (const [k, p] of Object.entries(s.properties || {})) {
          const pd = resolve(p);
          if (pd && pd.readOnly) continue;
          const ex = exampleFor(p, stack, depth + 1);
          if (ex !== undefined) obj[k] = ex;
        }
        const ap = s.additionalProperties;
        if (!s.properties && ap && typeof ap === 'object') {
          const ex = exampleFor(ap, stack, depth + 1);
          if (ex !== undefined) obj.key = ex;
        }
        return obj;
      }
      case 'array': {
        const ex = exampleFor(s.items, stack, depth + 1);
        return ex === undefined ? [] : [ex];
      }
      case 'string':
        switch (s.format) {
          case 'date-time': return futureDate();
          case 'date': return futureDate().slice(0, 10);
          case 'time': return '12:00:00Z';
          case 'uuid': return '3fa85f64-5717-4562-b3fc-2c963f66afa6';
          case 'email': return 'user@example.com';
          case 'uri': case 'url': return 'https://example.com/';
          case 'ipv4': return '192.0.2.1';
          case 'ipv6': return '2001:db8::1';
          case 'byte': return '';
          default: return s.minLength > 6 ? 'x'.repeat(s.minLength) : 'string';
        }
      case 'integer': return typeof s.minimum === 'number' ? s.minimum : typeof s.exclusiveMinimum === 'number' ? s.exclusiveMinimum + 1 : 0;
      case 'number': return typeof s.minimum === 'number' ? s.minimum : 0;
      case 'boolean': return false;
      default: return null;
    }
  }
  /* Media Type Object example: `example`, then the first of `examples`, then the schema. */
  function mediaExample(media) {
    if (!media) return undefined;
    if ('example' in media) return media.example;
    if (media.examples && typeof media.examples === 'object') {
      for (const ex of Object.values(media.examples)) {
        const d = deref(ex);
        if (d && 'value' in d) return d.value;
      }
    }
    return media.schema ? exampleFor(media.schema) : undefined;
  }
  function paramExample(p) {
    if ('example' in p) return p.example;
    if (p.examples && typeof p.examples === 'object') {
      for (const ex of Object.values(p.examples)) { const d = deref(ex); if (d && 'value' in d) return d.value; }
    }
    const s = resolve(p.schema || {});
    if ('example' in s) return s.example;
    if (Array.isArray(s.examples) && s.examples.length) return s.examples[0];
    return undefined;
  }

  /* ---------- indexing ---------- */

  function serverBase(spec) {
    const srv = Array.isArray(spec.servers) ? spec.servers[0] : null;
    if (!srv || typeof srv.url !== 'string') return '';
    const url = srv.url.replace(/\{([^}]+)\}/g, (m, name) => {
      const v = srv.variables && srv.variables[name];
      return v && v.default !== undefined ? String(v.default) : '';
    });
    try { return new URL(url, location.href).pathname.replace(/\/+$/, ''); } catch { return ''; }
  }
  const fullPath = (path) => (state.base && path !== state.base && !path.startsWith(state.base + '/') ? state.base + path : path);
  function fallbackTag(path) {
    const full = fullPath(path);
    const rest = full.startsWith(API_PREFIX + '/') ? full.slice(API_PREFIX.length + 1) : full.replace(/^\/+/, '');
    const seg = rest.split('/')[0];
    return seg && !seg.startsWith('{') ? seg : 'default';
  }
  function collectParams(item, op, path) {
    const map = new Map();
    for (const p of [...(item.parameters || []), ...(op.parameters || [])]) {
      const d = deref(p);
      if (d && d.name && d.in) map.set(d.in + ':' + d.name, d);
    }
    for (const m of path.matchAll(/\{([^}]+)\}/g)) {
      if (!map.has('path:' + m[1])) map.set('path:' + m[1], { name: m[1], in: 'path', required: true, schema: { type: 'string' } });
    }
    const order = { path: 0, query: 1, header: 2, cookie: 3 };
    return [...map.values()].sort((a, b) => (order[a.in] ?? 9) - (order[b.in] ?? 9));
  }
  function indexOps(spec) {
    const ops = [], used = new Set();
    for (const [path, item0] of Object.entries(spec.paths || {})) {
      const item = deref(item0);
      for (const method of HTTP_METHODS) {
        const op = item[method];
        if (!op || typeof op !== 'object') continue;
        let id = 'op-' + slug(op.operationId || `${method}-${path}`);
        while (used.has(id)) id += '_';
        used.add(id);
        const tag = (Array.isArray(op.tags) && op.tags.length && String(op.tags[0])) || fallbackTag(path);
        const scope = op['x-astrbot-scope'] !== undefined ? op['x-astrbot-scope'] : item['x-astrbot-scope'];
        const rtypes = new Set();
        for (const r of Object.values(op.responses || {})) Object.keys(deref(r).content || {}).forEach((ct) => rtypes.add(ct.toLowerCase()));
        const o = { id, path, method, op, item, tag, scope, params: collectParams(item, op, path), rtypes };
        o.hay = [method, fullPath(path), op.summary, op.operationId, op.description, tag, scopeText(scope)]
          .filter(Boolean).join(' ').toLowerCase();
        ops.push(o);
      }
    }
    return ops;
  }
  function scopeList(scope) {
    if (scope === undefined || scope === null || scope === '') return [];
    return (Array.isArray(scope) ? scope : [scope]).map(String);
  }
  function scopeText(scope) {
    const v = scopeList(scope);
    if (!v.length) return '';
    if (v.includes('system')) return 'admin only';
    if (v.includes('none')) return 'public';
    return 'scope: ' + v.join(', ');
  }
  function scopeBadge(scope) {
    const v = scopeList(scope), text = scopeText(scope);
    if (!text) return null;
    if (v.includes('system')) return badge(text, 'scope admin', 'Needs an admin token (x-astrbot-scope: system)');
    if (v.includes('none')) return badge(text, 'scope public', 'No credential needed (x-astrbot-scope: none)');
    return badge(text, 'scope', `The API key needs the ${v.join(', ')} scope`);
  }
  const isPublic = (o) => scopeList(o.scope).includes('none') || (Array.isArray(o.op.security) && o.op.security.length === 0);
  const isStream = (o) => o.rtypes.has('text/event-stream');
  const isJsonType = (ct) => /(^|[/+])json\b/i.test(ct || '');

  /* ---------- page rendering ---------- */

  function render(spec) {
    const info = spec.info || {};
    document.title = `${info.title || 'API'}${info.version ? ' ' + info.version : ''} · API reference`;
    $('api-title').textContent = info.title || 'API reference';
    $('api-version').textContent = info.version ? String(info.version) : '';
    state.base = serverBase(spec);
    state.ops = indexOps(spec);
    state.opsById = new Map(state.ops.map((o) => [o.id, o]));

    const tagMeta = new Map();
    for (const t of spec.tags || []) if (t && t.name) tagMeta.set(String(t.name), t);
    const grouped = new Map([...tagMeta.keys()].map((t) => [t, []]));
    for (const o of state.ops) {
      if (!grouped.has(o.tag)) grouped.set(o.tag, []);
      grouped.get(o.tag).push(o);
    }

    const main = $('content'), side = $('oplist');
    main.replaceChildren(intro(spec));
    side.replaceChildren();
    state.groups = [];
    for (const [tag, ops] of grouped) {
      if (!ops.length) continue;
      const sid = 'tag-' + slug(tag);
      const meta = tagMeta.get(tag) || {};
      const sideEl = h('div', { class: 'side-group' },
        h('a', { class: 'side-tag', href: '#' + sid }, tag),
        h('ul', null, ops.map((o) => {
          o.sideEl = h('li', null, h('a', { href: '#' + o.id, title: o.op.summary || fullPath(o.path), 'data-op': o.id },
            methodBadge(o.method), h('span', { class: 'side-path' + (o.op.deprecated ? ' dep' : '') }, shortPath(o.path))));
          return o.sideEl;
        })));
      const secEl = h('section', { class: 'tag', id: sid },
        h('h2', null, tag, ' ', h('a', { class: 'anchor', href: '#' + sid, 'aria-label': 'Link to ' + tag }, '#')),
        meta.description ? h('div', { class: 'tag-desc' }, md(meta.description)) : null,
        ops.map(opElement));
      side.append(sideEl);
      main.append(secEl);
      state.groups.push({ ops, sideEl, secEl });
    }
    if (!state.ops.length) main.append(h('p', { class: 'muted' }, 'This API description lists no operations.'));
  }
  function shortPath(path) {
    const full = fullPath(path);
    return full.startsWith(API_PREFIX + '/') ? full.slice(API_PREFIX.length) : full;
  }
  function intro(spec) {
    const info = spec.info || {};
    return h('section', { class: 'intro' },
      info.summary ? h('p', { class: 'lead' }, info.summary) : null,
      info.description ? h('div', { class: 'intro-desc' }, md(info.description)) : null,
      h('p', { class: 'muted' },
        'Paste an API key (', h('code', null, 'abk_…'), ') or an admin token above and choose how to send it. ',
        'It stays in this tab’s memory (or sessionStorage if you tick “keep for this tab”) and is only sent to this server. ',
        'Operations marked ', badge('admin only', 'scope admin'), ' need an admin token; ',
        badge('public', 'scope public'), ' ones need nothing.'));
  }

  function opElement(o) {
    const el = h('details', { class: 'op' + (o.op.deprecated ? ' deprecated' : ''), id: o.id },
      h('summary', null,
        methodBadge(o.method),
        h('code', { class: 'op-path' }, fullPath(o.path)),
        o.op.summary ? h('span', { class: 'op-sum' }, o.op.summary) : null,
        scopeBadge(o.scope),
        o.op.deprecated ? badge('deprecated', 'b-warn') : null));
    el.addEventListener('toggle', () => { if (el.open) ensureBody(o); });
    o.mainEl = el;
    return el;
  }
  function ensureBody(o) {
    if (o.rendered) return;
    o.rendered = true;
    try {
      o.mainEl.append(opBody(o));
    } catch (e) {
      o.mainEl.append(h('p', { class: 'error' }, 'Could not render this operation: ' + e.message));
    }
  }

  function paramInput(p, onChange) {
    const s = resolve(p.schema || {});
    const t = typesOf(s);
    const ex = paramExample(p);
    let vals = Array.isArray(s.enum) ? s.enum.filter((v) => v !== null) : null;
    if (!vals && t.types.length === 1 && t.types[0] === 'boolean') vals = [true, false];
    let el;
    if (vals) {
      el = h('select', { 'aria-label': p.name },
        h('option', { value: '' }, p.required ? '— choose —' : '— not set —'),
        vals.map((v) => h('option', { value: String(v) }, String(v))));
      // Path and required parameters start at their example, so the example runs as shipped.
      if ((p.in === 'path' || p.required) && ex !== undefined) el.value = String(ex);
    } else {
      let ph = ex !== undefined ? String(typeof ex === 'object' ? json(ex) : ex) : ('default' in s ? String(s.default) : shortType(p.schema || {}));
      if (t.types.includes('array') && p.in === 'query') ph += ' (comma-separated)';
      el = h('input', { type: 'text', 'aria-label': p.name, placeholder: ph, spellcheck: 'false', autocomplete: 'off' });
      if ((p.in === 'path' || p.required) && ex !== undefined && typeof ex !== 'object') el.value = String(ex);
    }
    el.addEventListener('input', onChange);
    el.addEventListener('change', onChange);
    return el;
  }

  function opBody(o) {
    const ui = { params: [], body: null, bodyType: null, ctrl: null };
    const update = () => { for (const f of ui.refresh || []) f(); };
    ui.refresh = [];
    const parts = [];

    if (o.op.description) parts.push(h('div', { class: 'op-desc' }, md(o.op.description)));
    if (o.op.operationId) parts.push(h('p', { class: 'muted small' }, 'operationId ', h('code', null, o.op.operationId)));

    const editable = o.params.filter((p) => p.in === 'path' || p.in === 'query' || p.in === 'header');
    if (editable.length) {
      const rows = editable.map((p) => {
        const input = paramInput(p, update);
        ui.params.push({ p, input });
        return h('tr', null,
          h('td', null, h('code', { class: 'pname' }, p.name), p.required ? h('span', { class: 'sn-req' }, 'required') : null,
            h('div', { class: 'muted small' }, p.in, ' · ', shortType(p.schema || {}), p.deprecated ? ' · deprecated' : '')),
          h('td', null, p.description ? md(p.description) : null),
          h('td', { class: 'pval' }, input));
      });
      parts.push(h('h3', null, 'Parameters'),
        h('table', { class: 'params' }, h('thead', null, h('tr', null, h('th', null, 'Name'), h('th', null, 'Description'), h('th', null, 'Value'))),
          h('tbody', null, rows)));
    }

    const rb = o.op.requestBody ? deref(o.op.requestBody) : null;
    if (rb && rb.content && Object.keys(rb.content).length) {
      const types = Object.keys(rb.content);
      const ct = types.find(isJsonType) || types[0];
      const media = rb.content[ct] || {};
      parts.push(h('h3', null, 'Request body ', h('code', { class: 'ct' }, ct), ' ',
        rb.required ? h('span', { class: 'sn-req' }, 'required') : h('span', { class: 'muted small' }, 'optional')));
      if (types.length > 1) parts.push(h('p', { class: 'muted small' }, 'Also accepts: ', types.filter((x) => x !== ct).join(', ')));
      if (rb.description) parts.push(h('div', { class: 'op-desc' }, md(rb.description)));
      if (media.schema) parts.push(schemaTree(media.schema));
      if (BODY_METHODS.has(o.method) && /^multipart\/form-data/i.test(ct)) {
        // An upload: one file picker per binary field, sent as multipart (the browser writes
        // the boundary), never a JSON text.
        const props = (resolve(media.schema || {}).properties) || {};
        const fields = Object.keys(props).filter((k) => resolve(props[k]).format === 'binary');
        ui.files = fields.map((name) => {
          const input = h('input', { type: 'file', 'aria-label': name });
          input.addEventListener('change', update);
          parts.push(h('div', { class: 'editor' }, h('label', null, h('code', { class: 'pname' }, name), ' ', input)));
          return { name, input };
        });
        ui.bodyType = ct;
      } else if (BODY_METHODS.has(o.method)) {
        const ex = mediaExample(media);
        const initial = ex === undefined ? '' : (isJsonType(ct) || typeof ex !== 'string' ? JSON.stringify(ex, null, 2) : ex);
        const ta = h('textarea', { class: 'body', spellcheck: 'false', 'aria-label': 'Request body', rows: Math.min(20, Math.max(4, initial.split('\n').length + 1)) });
        ta.value = initial;
        const note = h('span', { class: 'muted small' });
        const check = () => {
          let bad = '';
          if (isJsonType(ct) && ta.value.trim()) { try { JSON.parse(ta.value); } catch (e) { bad = e.message; } }
          ta.classList.toggle('invalid', !!bad);
          note.textContent = bad ? 'Invalid JSON: ' + bad : '';
          note.classList.toggle('error', !!bad);
        };
        ta.addEventListener('input', () => { check(); update(); });
        ui.body = ta;
        ui.bodyType = ct;
        parts.push(h('div', { class: 'editor' },
          h('div', { class: 'editor-bar' }, h('span', { class: 'muted small' }, 'Body to send (leave empty to send none)'), note,
            h('button', { type: 'button', class: 'btn small', onclick: () => { ta.value = initial; check(); update(); } }, 'Reset example')),
          ta));
      }
    }

    // Try it
    const send = h('button', { type: 'button', class: 'btn primary' }, 'Send');
    const stop = h('button', { type: 'button', class: 'btn', hidden: true }, 'Stop');
    const hint = h('span', { class: 'muted small' });
    const curlPre = h('pre', { class: 'curl' }, h('code'));
    const copy = h('button', { type: 'button', class: 'btn small' }, 'Copy');
    const result = h('div', { class: 'result', hidden: true, 'aria-live': 'polite' });
    const refreshCurl = () => {
      curlPre.firstChild.textContent = curlFor(o, ui);
      hint.textContent = isPublic(o) ? 'Public operation: no credential is sent.'
        : state.key ? `Sends the credential as ${carrierLabel()}.` : 'No credential entered: the request goes out without one.';
    };
    ui.refresh.push(refreshCurl);
    state.updaters.add(refreshCurl);
    refreshCurl();
    send.addEventListener('click', () => sendRequest(o, ui, result, send, stop));
    stop.addEventListener('click', () => { if (ui.ctrl) ui.ctrl.abort(); });
    copy.addEventListener('click', () => copyText(curlPre, copy));
    const body = h('div', { class: 'op-body' }, parts,
      h('div', { class: 'try' },
        h('div', { class: 'try-bar' }, send, stop, hint),
        h('div', { class: 'curl-head' }, h('span', { class: 'muted small' }, 'curl'), copy),
        curlPre, result),
      responsesEl(o));
    body.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && (e.ctrlKey || e.metaKey) && e.target.closest('input, textarea, select')) { e.preventDefault(); send.click(); }
    });
    return body;
  }
  function carrierLabel() {
    return { bearer: 'Authorization: Bearer', header: 'an X-API-Key header', query: 'an api_key query parameter' }[state.carrier];
  }

  function responsesEl(o) {
    const rs = o.op.responses || {};
    const codes = Object.keys(rs);
    if (!codes.length) return null;
    return h('div', { class: 'responses' }, h('h3', null, 'Responses'), codes.map((code) => {
      const r = deref(rs[code]);
      const cls = /^2/.test(code) ? 'ok' : /^3/.test(code) ? 'redir' : /^4/.test(code) ? 'cerr' : /^5/.test(code) ? 'serr' : 'other';
      const inner = [];
      const desc = r.description ? String(r.description) : '';
      const short = desc && !desc.includes('\n') && desc.length <= 120;
      if (desc && !short) inner.push(h('div', { class: 'op-desc' }, md(desc)));
      if (r.headers && Object.keys(r.headers).length) {
        inner.push(h('table', { class: 'params' }, h('tbody', null, Object.entries(r.headers).map(([name, hd0]) => {
          const hd = deref(hd0);
          return h('tr', null, h('td', null, h('code', null, name)), h('td', { class: 'muted small' }, shortType(hd.schema || {})),
            h('td', null, hd.description ? md(hd.description) : null));
        }))));
      }
      for (const [ct, media0] of Object.entries(r.content || {})) {
        const media = media0 || {};
        const ex = mediaExample(media);
        inner.push(h('div', { class: 'media' }, h('code', { class: 'ct' }, ct),
          media.schema ? schemaTree(media.schema) : null,
          ex !== undefined && !/event-stream/i.test(ct) ? h('details', { class: 'example' }, h('summary', null, 'Example'),
            h('pre', null, h('code', null, typeof ex === 'string' && !isJsonType(ct) ? ex : JSON.stringify(ex, null, 2)))) : null));
      }
      const first = desc.split('\n')[0];
      return h('details', { class: 'resp', open: cls === 'ok' && inner.length > 0 },
        h('summary', null, h('span', { class: 'code c-' + cls }, code), ' ', h('span', null, clip(first, 120))), inner);
    }));
  }

  /* ---------- requests ---------- */

  function buildRequest(o, ui) {
    const missing = [];
    const path = fullPath(o.path).replace(/\{([^}]+)\}/g, (m, name) => {
      const e = ui.params.find((x) => x.p.in === 'path' && x.p.name === name);
      const v = e ? e.input.value : '';
      if (v === '') { missing.push(name); return m; }
      return encodeURIComponent(v);
    });
    const qs = new URLSearchParams();
    const headers = [];
    for (const { p, input } of ui.params) {
      const v = input.value;
      if (v === '') { if (p.required && p.in !== 'path') missing.push(p.name); continue; }
      if (p.in === 'query') {
        const isArr = typesOf(resolve(p.schema || {})).types.includes('array');
        if (isArr && p.explode !== false) v.split(',').map((x) => x.trim()).filter(Boolean).forEach((x) => qs.append(p.name, x));
        else qs.append(p.name, v);
      } else if (p.in === 'header') headers.push([p.name, v]);
    }
    let body = null;
    let files = null;
    if (ui.files && ui.files.length) {
      files = ui.files.map(({ name, input }) => ({ name, file: input.files && input.files[0] }));
      const chosen = files.filter((f) => f.file);
      if (!chosen.length) missing.push(files.map((f) => f.name).join(', ') + ' (choose a file)');
      else {
        body = new FormData();
        for (const f of chosen) body.append(f.name, f.file, f.file.name);
      }
    } else if (ui.body && BODY_METHODS.has(o.method) && ui.body.value.trim()) body = ui.body.value;
    return { path, qs, headers, body, files, ct: ui.bodyType || 'application/json', missing };
  }

  function curlFor(o, ui) {
    const req = buildRequest(o, ui);
    const m = o.method.toUpperCase();
    const auth = !isPublic(o);
    const reveal = state.showKey && state.key;
    let cmd = 'curl';
    if (isStream(o)) cmd += ' -N';
    if (m === 'HEAD') cmd += ' --head';
    else if (m !== 'GET') cmd += ' -X ' + m;
    const q = req.qs.toString();
    const base = location.origin + req.path;
    let url;
    if (auth && state.carrier === 'query') {
      url = sq(base + '?' + (q ? q + '&' : '') + 'api_key=') + (reveal ? sq(encodeURIComponent(state.key)) : `"${KEY_VAR}"`);
    } else url = sq(base + (q ? '?' + q : ''));
    const lines = [cmd + ' ' + url];
    if (auth && state.carrier === 'bearer') lines.push('-H ' + (reveal ? sq('Authorization: Bearer ' + state.key) : `"Authorization: Bearer ${KEY_VAR}"`));
    if (auth && state.carrier === 'header') lines.push('-H ' + (reveal ? sq('X-API-Key: ' + state.key) : `"X-API-Key: ${KEY_VAR}"`));
    for (const [k, v] of req.headers) lines.push('-H ' + sq(`${k}: ${v}`));
    const accept = acceptFor(o);
    if (accept) lines.push('-H ' + sq('Accept: ' + accept));
    if (req.files) {
      for (const f of req.files) lines.push('-F ' + sq(`${f.name}=@${f.file ? f.file.name : 'path/to/file'}`));
    } else if (req.body !== null) {
      let b = req.body;
      if (isJsonType(req.ct)) { try { b = JSON.stringify(JSON.parse(b)); } catch { /* send as typed */ } }
      lines.push('-H ' + sq('Content-Type: ' + req.ct), '--data-raw ' + sq(b));
    }
    return lines.join(' \\\n  ');
  }
  function acceptFor(o) {
    return o.rtypes.size && [...o.rtypes].every((t) => t === 'text/event-stream') ? 'text/event-stream' : null;
  }

  // A WebSocket operation (its `x-astrbot-ws-example` is the first message): opened from
  // this page with the key in the query (browsers cannot set headers on a WebSocket); each
  // message is shown as it comes, until `end`, a close, or Stop.
  function sendWebSocket(o, ui, out, sendBtn, stopBtn) {
    const ctrl = new AbortController();
    ui.ctrl = ctrl;
    const qs = new URLSearchParams();
    if (state.key) qs.set('api_key', state.key);
    const q = qs.toString();
    const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + o.path + (q ? '?' + q : '');
    const statusEl = h('div', { class: 'res-status' }, h('span', { class: 'muted' }, `WebSocket ${o.path} · connecting…`));
    const pre = h('pre', { class: 'res-body stream' });
    out.replaceChildren(statusEl, pre);
    stopBtn.hidden = false;
    sendBtn.disabled = true;
    const push = (line) => { pre.append(line + '\n'); pre.scrollTop = pre.scrollHeight; };
    const done = () => { if (ui.ctrl === ctrl) { ui.ctrl = null; stopBtn.hidden = true; } sendBtn.disabled = false; };
    let ws;
    try {
      ws = new WebSocket(url);
    } catch (e) {
      statusEl.replaceChildren(h('span', { class: 'error' }, 'Could not open the WebSocket: ' + e.message));
      return done();
    }
    ctrl.signal.addEventListener('abort', () => ws.close(1000));
    const first = JSON.stringify(o.op['x-astrbot-ws-example']);
    ws.onopen = () => {
      statusEl.replaceChildren(h('span', { class: 'muted' }, `WebSocket ${o.path} · open`));
      push('> ' + first);
      ws.send(first);
    };
    ws.onmessage = (m) => {
      push('< ' + m.data);
      try { if (JSON.parse(m.data).type === 'end') ws.close(1000); } catch { /* not JSON */ }
    };
    ws.onerror = () => statusEl.replaceChildren(h('span', { class: 'error' }, 'WebSocket error (the browser console says more)'));
    ws.onclose = (e) => { push(`closed: ${e.code}${e.reason ? ' ' + e.reason : ''}`); done(); };
  }

  async function sendRequest(o, ui, out, sendBtn, stopBtn) {
    if (ui.ctrl) ui.ctrl.abort();
    out.hidden = false;
    if (o.op['x-astrbot-ws-example']) return sendWebSocket(o, ui, out, sendBtn, stopBtn);
    const req = buildRequest(o, ui);
    if (req.missing.length) return out.replaceChildren(h('p', { class: 'error' }, 'Missing required parameter(s): ' + req.missing.join(', ')));
    if (req.body !== null && isJsonType(req.ct)) {
      try { JSON.parse(req.body); } catch (e) { return out.replaceChildren(h('p', { class: 'error' }, 'The request body is not valid JSON: ' + e.message)); }
    }
    const qs = new URLSearchParams(req.qs);
    let headers;
    try {
      headers = new Headers(req.headers);
      if (!isPublic(o) && state.key) {
        if (state.carrier === 'bearer') headers.set('Authorization', 'Bearer ' + state.key);
        else if (state.carrier === 'header') headers.set('X-API-Key', state.key);
        else qs.set('api_key', state.key);
      }
      if (req.body !== null && !req.files) headers.set('Content-Type', req.ct);
      const accept = acceptFor(o);
      if (accept) headers.set('Accept', accept);
    } catch (e) {
      return out.replaceChildren(h('p', { class: 'error' }, 'Could not build the request headers: ' + e.message));
    }
    const q = qs.toString();
    const url = req.path + (q ? '?' + q : '');
    const shownQ = state.showKey ? q : q.replace(/(^|&)api_key=[^&]*/, '$1api_key=…');
    const shownUrl = req.path + (shownQ ? '?' + shownQ : '');
    const m = o.method.toUpperCase();
    const ctrl = new AbortController();
    ui.ctrl = ctrl;
    const statusEl = h('div', { class: 'res-status' }, h('span', { class: 'muted' }, `${m} ${shownUrl} · sending…`));
    out.replaceChildren(statusEl);
    stopBtn.hidden = false;
    sendBtn.disabled = true;
    const t0 = performance.now();
    const done = () => { if (ui.ctrl === ctrl) { ui.ctrl = null; stopBtn.hidden = true; } sendBtn.disabled = false; };
    let res;
    try {
      res = await fetch(url, { method: m, headers, body: req.body ?? undefined, signal: ctrl.signal, cache: 'no-store', credentials: 'same-origin' });
    } catch (e) {
      statusEl.replaceChildren(h('span', { class: 'error' }, ctrl.signal.aborted ? 'Request cancelled.' : 'Network error: ' + e.message));
      return done();
    }
    sendBtn.disabled = false;
    const ms = Math.round(performance.now() - t0);
    const cls = res.status < 300 ? 'ok' : res.status < 400 ? 'redir' : res.status < 500 ? 'cerr' : 'serr';
    const retry = res.headers.get('retry-after');
    statusEl.replaceChildren();
    add(statusEl, [
      h('span', { class: 'code c-' + cls }, String(res.status)), ' ',
      h('strong', null, res.statusText || REASONS[res.status] || ''), ' ',
      h('span', { class: 'muted' }, `${m} ${shownUrl} · ${ms} ms`),
      res.redirected ? h('span', { class: 'muted' }, ' · redirected to ' + res.url) : null,
      retry && (res.status === 429 || res.status === 503) ? h('span', { class: 'badge b-warn' }, `retry after ${retry} s`) : null]);
    out.append(headersEl(res));
    const pre = h('pre', { class: 'res-body' });
    out.append(pre);
    const ctype = res.headers.get('content-type') || '';
    try {
      if (/^\s*text\/event-stream/i.test(ctype) && res.body) {
        pre.classList.add('stream');
        const reader = res.body.getReader();
        const dec = new TextDecoder();
        let buf = '';
        const push = (line) => {
          const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 8;
          pre.append(line.replace(/\r$/, '') + '\n');
          if (atEnd) pre.scrollTop = pre.scrollHeight;
        };
        for (;;) {
          const { value, done: end } = await reader.read();
          if (end) break;
          buf += dec.decode(value, { stream: true });
          const lines = buf.split('\n');
          buf = lines.pop();
          lines.forEach(push);
        }
        buf += dec.decode();
        if (buf) push(buf);
        out.append(h('p', { class: 'muted small' }, 'Stream ended.'));
      } else if (m === 'HEAD' || res.status === 204 || res.status === 304) {
        pre.append(h('span', { class: 'muted' }, '(no body)'));
      } else {
        const text = await res.text();
        let shown = text;
        if (isJsonType(ctype) || /^\s*[[{]/.test(text)) { try { shown = JSON.stringify(JSON.parse(text), null, 2); } catch { /* not JSON */ } }
        if (shown === '') pre.append(h('span', { class: 'muted' }, '(empty body)'));
        else pre.append(shown);
      }
    } catch (e) {
      out.append(h('p', { class: ctrl.signal.aborted ? 'muted small' : 'error' }, ctrl.signal.aborted ? 'Stopped.' : 'Error reading the body: ' + e.message));
    }
    done();
  }
  function headersEl(res) {
    const all = [...res.headers];
    const notable = (k) => NOTABLE.has(k) || k.startsWith('ratelimit');
    all.sort((a, b) => Number(notable(b[0])) - Number(notable(a[0])));
    return h('details', { class: 'res-hdrs', open: true },
      h('summary', null, `Response headers (${all.length})`),
      h('table', { class: 'hdrs' }, h('tbody', null, all.map(([k, v]) =>
        h('tr', { class: notable(k) ? 'hl' : null }, h('th', null, k), h('td', null, v))))));
  }
  function copyText(pre, btn) {
    const text = pre.textContent;
    const ok = () => { btn.textContent = 'Copied'; setTimeout(() => { btn.textContent = 'Copy'; }, 1500); };
    const fallback = () => {
      const r = document.createRange();
      r.selectNodeContents(pre);
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(r);
      try { if (document.execCommand('copy')) return ok(); } catch { /* ignore */ }
      btn.textContent = 'Press Ctrl+C';
    };
    if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(text).then(ok, fallback);
    else fallback();
  }

  /* ---------- navigation, filter, credential ---------- */

  function goTo(id, push) {
    const o = state.opsById.get(id);
    if (!o) return false;
    if (push && location.hash !== '#' + id) history.pushState(null, '', '#' + id);
    o.mainEl.hidden = false;
    ensureBody(o);
    o.mainEl.open = true;
    o.mainEl.scrollIntoView({ block: 'start' });
    document.querySelectorAll('#oplist a.active').forEach((a) => a.classList.remove('active'));
    const link = o.sideEl && o.sideEl.querySelector('a');
    if (link) link.classList.add('active');
    return true;
  }
  function fromHash() {
    let id = location.hash.slice(1);
    try { id = decodeURIComponent(id); } catch { /* keep raw */ }
    if (id) goTo(id, false);
  }
  function applyFilter(q) {
    const terms = q.toLowerCase().split(/\s+/).filter(Boolean);
    for (const o of state.ops) {
      const hit = terms.every((t) => o.hay.includes(t));
      o.sideEl.hidden = !hit;
      o.mainEl.hidden = !hit;
    }
    for (const g of state.groups) {
      const any = g.ops.some((o) => !o.sideEl.hidden);
      g.sideEl.hidden = !any;
      g.secEl.hidden = !any;
    }
  }
  function setNav(open) {
    $('sidebar').classList.toggle('open', open);
    $('navtoggle').setAttribute('aria-expanded', String(open));
  }

  function initUi() {
    const key = $('key'), carrier = $('carrier'), show = $('showkey'), remember = $('remember');
    try {
      const saved = sessionStorage.getItem(SESSION_KEY);
      if (saved) {
        const v = JSON.parse(saved);
        key.value = v.key || '';
        if (['bearer', 'header', 'query'].includes(v.carrier)) carrier.value = v.carrier;
        remember.checked = true;
      }
    } catch { /* storage unavailable */ }
    const sync = () => {
      state.key = key.value.trim();
      state.carrier = carrier.value;
      state.showKey = show.checked;
      key.type = show.checked ? 'text' : 'password';
      $('keykind').textContent = !state.key ? '' : state.key.startsWith('abk_') ? 'API key' : 'admin token';
      try {
        if (remember.checked && state.key) sessionStorage.setItem(SESSION_KEY, JSON.stringify({ key: state.key, carrier: state.carrier }));
        else sessionStorage.removeItem(SESSION_KEY);
      } catch { /* storage unavailable */ }
      state.updaters.forEach((f) => f());
    };
    for (const el of [key, carrier, show, remember]) { el.addEventListener('input', sync); el.addEventListener('change', sync); }
    $('forget').addEventListener('click', () => { key.value = ''; remember.checked = false; sync(); key.focus(); });
    sync();

    $('filter').addEventListener('input', (e) => applyFilter(e.target.value));
    $('navtoggle').addEventListener('click', () => setNav(!$('sidebar').classList.contains('open')));
    $('oplist').addEventListener('click', (e) => {
      const a = e.target.closest('a[data-op]');
      if (a) {
        e.preventDefault();
        goTo(a.getAttribute('data-op'), true);
      }
      if (e.target.closest('a')) setNav(false);
    });
    window.addEventListener('hashchange', fromHash);
  }

  async function load() {
    const status = $('status') || h('p', { id: 'status' });
    if (!status.isConnected) $('content').replaceChildren(status);
    status.className = 'muted';
    status.textContent = 'Loading the API description…';
    try {
      const res = await fetch(SPEC_URL, { headers: { Accept: 'application/json' }, cache: 'no-cache', credentials: 'same-origin' });
      if (!res.ok) throw new Error(`${SPEC_URL} answered ${res.status} ${res.statusText || REASONS[res.status] || ''}`.trim());
      const spec = await res.json();
      if (!spec || typeof spec !== 'object' || typeof spec.paths !== 'object') throw new Error('the document has no "paths" object');
      state.spec = spec;
      render(spec);
      if (location.hash) fromHash();
    } catch (e) {
      const main = $('content');
      main.replaceChildren(status);
      status.className = 'error';
      status.textContent = 'Could not load the API description: ' + e.message + ' ';
      status.append(h('button', { type: 'button', class: 'btn small', onclick: load }, 'Retry'));
    }
  }

  initUi();
  load();
})();
