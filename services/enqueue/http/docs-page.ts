/**
 * The `/docs` page: a small, self-contained API explorer over `/openapi.json` (no CDN, no build step,
 * works offline and under a strict CSP). Lists every operation by tag with its parameters, body and
 * response schemas, and has a "Try it" form that sends the request with the API key typed in the
 * page (kept in the browser's localStorage) and shows the response, streaming for event streams.
 */
export const DOCS_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sluice API</title>
<style>
  :root { color-scheme: light dark; --b: #8884; --m: #888; }
  body { font: 14px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1000px; padding: 1rem; }
  header { display: flex; gap: 1rem; align-items: center; flex-wrap: wrap; }
  h1 { font-size: 1.4rem; margin: .2rem 0; } h2 { font-size: 1.1rem; margin: 1.5rem 0 .4rem; text-transform: capitalize; }
  details { border: 1px solid var(--b); border-radius: 6px; margin: .35rem 0; }
  summary { cursor: pointer; padding: .45rem .6rem; display: flex; gap: .6rem; align-items: baseline; }
  .m { font: bold 12px monospace; padding: 2px 6px; border-radius: 4px; min-width: 3.5em; text-align: center; color: #fff; }
  .get { background: #2f7fd6; } .post { background: #2e9d57; } .patch { background: #c9822b; } .delete { background: #c94343; } .put { background: #7a52c7; }
  .p { font-family: monospace; } .s { color: var(--m); } .body { padding: 0 .8rem .8rem; }
  pre { background: #8881; padding: .5rem; overflow: auto; max-height: 22rem; border-radius: 4px; font-size: 12px; }
  input, textarea, button { font: inherit; } textarea { width: 100%; min-height: 7rem; font-family: monospace; font-size: 12px; }
  label { display: block; margin: .25rem 0; } label span { display: inline-block; min-width: 9rem; font-family: monospace; }
  .scope { font-size: 11px; border: 1px solid var(--b); border-radius: 8px; padding: 0 6px; color: var(--m); }
</style>
</head>
<body>
<header>
  <h1>Sluice API</h1>
  <label>API key <input id="key" type="password" size="40" placeholder="sk_…" autocomplete="off"></label>
  <a href="/openapi.json">openapi.json</a>
</header>
<p id="info" class="s"></p>
<main id="ops">Loading /openapi.json…</main>
<script>
"use strict";
const keyInput = document.getElementById("key");
keyInput.value = localStorage.getItem("sluice.apiKey") || "";
keyInput.addEventListener("change", () => localStorage.setItem("sluice.apiKey", keyInput.value));
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) k === "class" ? (e.className = v) : e.setAttribute(k, v);
  for (const k of kids) e.append(k);
  return e;
};
let spec;
const resolve = (s) => {
  if (!s || typeof s !== "object") return s;
  if (s.$ref) return resolve(spec.components.schemas[s.$ref.split("/").pop()]);
  return s;
};
function example(s, depth = 0) {
  s = resolve(s);
  if (!s || depth > 4) return null;
  if (s.default !== undefined) return s.default;
  if (s.enum) return s.enum[0];
  if (s.anyOf) return example(s.anyOf[0], depth + 1);
  if (s.type === "object" || s.properties) {
    const o = {};
    for (const k of s.required || []) o[k] = example(s.properties[k], depth + 1);
    return o;
  }
  if (s.type === "array") return [example(s.items, depth + 1)];
  if (s.type === "string") return s.pattern && s.pattern.startsWith("^[a-z0-9]") ? "noop" : "string";
  if (s.type === "integer" || s.type === "number") return s.minimum ?? 0;
  if (s.type === "boolean") return false;
  return null;
}
function operation(path, method, op) {
  const out = el("pre", {}, "");
  const fields = [];
  const form = el("div");
  for (const p of op.parameters || []) {
    const input = el("input", { size: 40, placeholder: p.description || "" });
    fields.push([p, input]);
    form.append(el("label", {}, el("span", {}, p.name + (p.required ? " *" : "") + " (" + p.in + ")"), input));
  }
  const content = op.requestBody && op.requestBody.content;
  const bodyType = content && Object.keys(content)[0];
  const body = content ? el("textarea", {}, JSON.stringify(example(content[bodyType].schema), null, 2)) : null;
  if (body) form.append(el("label", {}, "Body (" + bodyType + ")"), body);
  const send = el("button", {}, "Send");
  const stop = el("button", { hidden: "" }, "Stop");
  let ctrl;
  stop.onclick = () => ctrl && ctrl.abort();
  send.onclick = async () => {
    let url = path;
    const q = new URLSearchParams();
    for (const [p, input] of fields) {
      if (!input.value) continue;
      if (p.in === "path") url = url.replace("{" + p.name + "}", encodeURIComponent(input.value));
      else q.set(p.name, input.value);
    }
    if ([...q].length) url += "?" + q;
    const headers = {};
    if (keyInput.value) headers.authorization = "Bearer " + keyInput.value;
    if (body) headers["content-type"] = bodyType;
    ctrl = new AbortController();
    stop.hidden = false;
    out.textContent = method.toUpperCase() + " " + url + "\\n";
    try {
      const res = await fetch(url, { method: method.toUpperCase(), headers, body: body ? body.value : undefined, signal: ctrl.signal });
      out.textContent += res.status + " " + res.statusText + "\\n";
      for (const [k, v] of res.headers) out.textContent += k + ": " + v + "\\n";
      out.textContent += "\\n";
      const reader = res.body.getReader();
      const dec = new TextDecoder();
      let text = "";
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        text += dec.decode(value, { stream: true });
        out.textContent = out.textContent.split("\\n\\n")[0] + "\\n\\n" + text;
      }
      try { out.textContent = out.textContent.split("\\n\\n")[0] + "\\n\\n" + JSON.stringify(JSON.parse(text), null, 2); } catch {}
    } catch (e) {
      out.textContent += String(e);
    }
    stop.hidden = true;
  };
  const resp = el("div");
  for (const [status, r] of Object.entries(op.responses || {})) {
    const c = r.content && Object.entries(r.content)[0];
    const schema = c && c[1].schema ? JSON.stringify(resolve(c[1].schema), null, 2) : "";
    resp.append(el("details", {}, el("summary", {}, el("b", {}, status), " ", r.description + (c ? " — " + c[0] : "")), el("pre", {}, schema)));
  }
  return el("details", {},
    el("summary", {}, el("span", { class: "m " + method }, method.toUpperCase()), el("span", { class: "p" }, path), el("span", { class: "s" }, op.summary || ""),
      op["x-sluice-scope"] ? el("span", { class: "scope" }, op["x-sluice-scope"]) : ""),
    el("div", { class: "body" },
      op.description ? el("p", {}, op.description) : "",
      el("h4", {}, "Responses"), resp,
      el("h4", {}, "Try it"), form, send, " ", stop, out));
}
fetch("/openapi.json", keyInput.value ? { headers: { authorization: "Bearer " + keyInput.value } } : {})
  .then((r) => { if (!r.ok) throw new Error(r.status + " (enter an API key with the read scope, then reload)"); return r.json(); })
  .then((s) => {
  spec = s;
  document.getElementById("info").textContent = s.info.title + " " + s.info.version + " — " + s.info.description;
  const byTag = {};
  for (const [path, item] of Object.entries(s.paths))
    for (const [method, op] of Object.entries(item)) (byTag[(op.tags || ["other"])[0]] ||= []).push([path, method, op]);
  const main = document.getElementById("ops");
  main.textContent = "";
  for (const [tag, ops] of Object.entries(byTag)) {
    main.append(el("h2", {}, tag));
    for (const [path, method, op] of ops) main.append(operation(path, method, op));
  }
}, (e) => { document.getElementById("ops").textContent = "Could not load /openapi.json: " + e; });
</script>
</body>
</html>
`;
