/* grex site search: runs in the browser, no server, no network.
 *
 * Reads window.GREX_SEARCH (assets/search/meta.js) and loads the index shards a query
 * needs as <script> elements (which works from file://); format in
 * grex/export/searchindex.py. Query language (a subset of `grex search`):
 *   words            every word must match the start of a word in the thread
 *   "a phrase"       its words must all match (there are no word positions in the index)
 *   from:NAME        a message in the thread was sent by NAME (name or address words)
 *   person:NAME      NAME wrote or received a message in the thread
 *   topic:LABEL      the thread carries that topic
 *   subject:WORD     the subject holds the word
 *   date:2009-11     the thread was active then (YYYY, YYYY-MM or YYYY-MM-DD)
 *   -word, -from:X   leave out threads that match
 * Results: threads matching everything, ranked by subject matches, then latest activity.
 * Output is built with textContent only: nothing from the index is parsed as HTML.
 */
(function () {
  "use strict";

  var PAGE = 25;
  var FIELDS = { from: "from", person: "person", topic: "topic", subject: "subj" };
  var base = "assets/search/";
  var loaded = {};   // "field:key" -> [terms, postings] | "docs:n" -> rows
  var waiting = {};  // "field:key" -> Promise

  window.GREX_SEARCH_LOAD = function (field, key, data) {
    loaded[field + ":" + key] = data;
  };

  function fold(s) {
    return s.toLowerCase().normalize("NFKD").replace(/\p{M}/gu, "");
  }

  function shardFile(field, key) {
    var name = /^[a-z0-9]+$/.test(key) ? key :
      "x" + Array.from(key).map(function (c) { return c.codePointAt(0).toString(16); }).join("-");
    return field + "-" + name + ".js";
  }

  function load(id, file) {
    if (loaded[id] !== undefined) return Promise.resolve();
    if (waiting[id]) return waiting[id];
    waiting[id] = new Promise(function (resolve, reject) {
      var s = document.createElement("script");
      s.src = base + file;
      s.onload = function () { resolve(); };
      s.onerror = function () { delete waiting[id]; reject(new Error("missing " + file)); };
      document.head.appendChild(s);
    });
    return waiting[id];
  }

  function Searcher(meta) {
    this.meta = meta;
    this.n = meta.n;
    this.stop = new Set(meta.stop);
    this.cache = {};
  }

  /* Same as grex.export.text.tokens: folded runs of letters/digits, 2-32 long, no stop words. */
  Searcher.prototype.tokens = function (s) {
    var out = [];
    var m = fold(s).match(/[\p{L}\p{N}]+/gu) || [];
    for (var i = 0; i < m.length; i++) {
      var t = m[i];
      if (t.length >= 2 && t.length <= 32 && !this.stop.has(t)) out.push(t);
    }
    return out;
  };

  /* Shards a word needs: its own, and for words shorter than the key every longer key. */
  Searcher.prototype.shardsFor = function (field, word) {
    var info = this.meta.shards[field];
    if (!info) return [];
    var keys = info[1], out = [];
    for (var i = 0; i < keys.length; i++) {
      if (keys[i].lastIndexOf(word, 0) === 0 || word.lastIndexOf(keys[i], 0) === 0) {
        out.push(keys[i]);
      }
    }
    return out;
  };

  Searcher.prototype.postings = function (id, shard, i) {
    var key = id + ":" + i;
    var hit = this.cache[key];
    if (hit) return hit;
    var s = shard[1][i];
    var parts = s ? s.split(",") : [];
    var out = new Array(parts.length);
    var cur = 0;
    for (var j = 0; j < parts.length; j++) {
      cur += parseInt(parts[j], 36);
      out[j] = cur;
    }
    this.cache[key] = out;
    return out;
  };

  /* Threads holding a term that starts with `prefix` in `field`, as a 0/1 array. */
  Searcher.prototype.prefixSet = function (field, prefix) {
    var set = new Uint8Array(this.n);
    var keys = this.shardsFor(field, prefix);
    for (var k = 0; k < keys.length; k++) {
      var id = field + ":" + keys[k], shard = loaded[id];
      if (!shard) continue;
      var terms = shard[0], lo = 0, hi = terms.length;
      while (lo < hi) {
        var mid = (lo + hi) >> 1;
        if (terms[mid] < prefix) lo = mid + 1; else hi = mid;
      }
      for (var i = lo; i < terms.length && terms[i].lastIndexOf(prefix, 0) === 0; i++) {
        var docs = this.postings(id, shard, i);
        for (var j = 0; j < docs.length; j++) set[docs[j]] = 1;
      }
    }
    return set;
  };

  function dayRange(v) {
    var m = /^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?$/.exec(v);
    if (!m) return null;
    var y = +m[1], mo = m[2] ? +m[2] - 1 : 0, d = m[3] ? +m[3] : 1;
    var start = Date.UTC(y, mo, d);
    var end = m[3] ? Date.UTC(y, mo, d + 1) : m[2] ? Date.UTC(y, mo + 1, 1) : Date.UTC(y + 1, 0, 1);
    return [Math.floor(start / 864e5), Math.floor(end / 864e5)];
  }

  Searcher.prototype.dateSet = function (range) {
    var set = new Uint8Array(this.n), first = this.meta.first, last = this.meta.last;
    for (var d = 0; d < this.n; d++) {
      if (first[d] < range[1] && last[d] >= range[0]) set[d] = 1;
    }
    return set;
  };

  /* Parse a query into clauses: {neg, field, value, phrase}. */
  function parse(q) {
    var re = /(-?)(?:([A-Za-z]+):)?(?:"([^"]*)"?|(\S+))/g;
    var out = [], m;
    while ((m = re.exec(q)) !== null) {
      if (m[0] === "") { re.lastIndex++; continue; }
      var field = m[2] ? m[2].toLowerCase() : "";
      var value = m[3] !== undefined ? m[3] : m[4];
      if (field && !(field in FIELDS) && field !== "date") {
        value = m[2] + ":" + value; // an unknown prefix is just text
        field = "";
      }
      out.push({ neg: m[1] === "-", field: field, value: value, phrase: m[3] !== undefined });
    }
    return out;
  }

  Searcher.prototype.plan = function (q) {
    var clauses = parse(q), self = this, needs = [];
    clauses.forEach(function (cl) {
      cl.words = cl.field === "date" ? [] : self.tokens(cl.value);
      var field = cl.field ? FIELDS[cl.field] : "text";
      cl.words.forEach(function (w) {
        self.shardsFor(field, w).forEach(function (k) { needs.push([field, k]); });
        if (!cl.field && !cl.neg) {
          self.shardsFor("subj", w).forEach(function (k) { needs.push(["subj", k]); });
        }
      });
    });
    return { clauses: clauses, needs: needs };
  };

  Searcher.prototype.run = function (plan) {
    var include = null, exclude = new Uint8Array(this.n), boost = [], used = 0;
    for (var c = 0; c < plan.clauses.length; c++) {
      var cl = plan.clauses[c], set = null;
      if (cl.field === "date") {
        var range = dayRange(cl.value.trim());
        if (!range) continue;
        set = this.dateSet(range);
      } else {
        if (!cl.words.length) continue;
        var field = cl.field ? FIELDS[cl.field] : "text";
        for (var w = 0; w < cl.words.length; w++) {
          var s = this.prefixSet(field, cl.words[w]);
          if (set) { for (var i = 0; i < this.n; i++) set[i] &= s[i]; } else set = s;
        }
        if (!cl.field && !cl.neg) boost = boost.concat(cl.words);
      }
      used++;
      if (cl.neg) {
        for (var k = 0; k < this.n; k++) exclude[k] |= set[k];
      } else if (include) {
        for (var k2 = 0; k2 < this.n; k2++) include[k2] &= set[k2];
      } else {
        include = set;
      }
    }
    if (!used) return { hits: [], empty: true };
    var score = new Float64Array(this.n);
    for (var b = 0; b < boost.length; b++) {
      var subj = this.prefixSet("subj", boost[b]);
      for (var d0 = 0; d0 < this.n; d0++) score[d0] += 2 * subj[d0];
    }
    var hits = [];
    for (var d = 0; d < this.n; d++) {
      if ((include ? include[d] : 1) && !exclude[d]) hits.push(d);
    }
    var last = this.meta.last;
    hits.sort(function (a, b2) { return (score[b2] - score[a]) || (last[b2] - last[a]) || (b2 - a); });
    return { hits: hits, empty: false };
  };

  /* ------------------------------------------------------------------ page */

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function renderHit(doc) {
    var li = el("li");
    var a = el("a", "subject", doc[1]);
    a.href = "t/" + doc[0] + ".html";
    a.setAttribute("data-thread", doc[0]);  // the id `grex search` prints
    li.appendChild(a);
    var meta = doc[3] + " · " + doc[5] + " message" + (doc[5] === 1 ? "" : "s");
    if (doc[4]) meta += " · " + doc[4];
    li.appendChild(el("span", "meta", meta));
    if (doc[6]) li.appendChild(el("p", "excerpt", doc[6]));
    return li;
  }

  function start() {
    var meta = window.GREX_SEARCH;
    var input = document.getElementById("q");
    var status = document.getElementById("search-status");
    var list = document.getElementById("search-results");
    var more = document.getElementById("search-more");
    var header = document.getElementById("site-q");
    if (!input || !status || !list) return;
    if (!meta || meta.v !== 2) {
      status.textContent = "The search index is missing or from another version of grex.";
      return;
    }
    var searcher = new Searcher(meta);
    var current = [], shown = 0, timer = null, generation = 0;

    function docsFor(hits) {
      var chunks = {};
      hits.forEach(function (d) { chunks[Math.floor(d / meta.chunk)] = true; });
      return Promise.all(Object.keys(chunks).map(function (c) {
        return load("docs:" + c, "docs-" + c + ".js");
      }));
    }

    function showMore() {
      var gen = generation, end = Math.min(shown + PAGE, current.length);
      var slice = current.slice(shown, end);
      return docsFor(slice).then(function () {
        if (gen !== generation) return;
        var frag = document.createDocumentFragment();
        slice.forEach(function (d) {
          var rows = loaded["docs:" + Math.floor(d / meta.chunk)];
          frag.appendChild(renderHit(rows[d % meta.chunk]));
        });
        list.appendChild(frag);
        shown = end;
        more.hidden = shown >= current.length;
      });
    }

    function fail(err) {
      status.textContent = "Search failed: " + err.message + " (the site's index is incomplete;" +
        " export it again).";
    }

    function run(q, updateUrl) {
      var gen = ++generation;
      if (!q.trim()) {
        list.textContent = "";
        current = [];
        shown = 0;
        status.textContent = "Type words to search " + meta.n + " threads.";
        more.hidden = true;
        return;
      }
      var plan = searcher.plan(q);
      Promise.all(plan.needs.map(function (n) {
        return load(n[0] + ":" + n[1], shardFile(n[0], n[1]));
      })).then(function () {
        if (gen !== generation) return;
        var res = searcher.run(plan);
        list.textContent = "";
        current = res.hits;
        shown = 0;
        return showMore().then(function () {
          if (gen !== generation) return;
          // the status is set last: once it says how many, the first results are on screen
          status.textContent = res.empty ?
            "Nothing to search for in “" + q + "” (only very common words?)." :
            current.length + " thread" + (current.length === 1 ? "" : "s") + " for “" + q + "”";
          document.title = q + " · Search";
          if (updateUrl) {
            try {
              history.replaceState(null, "", "?q=" + encodeURIComponent(q));
            } catch (e) { /* some file:// setups refuse: the results are shown anyway */ }
          }
        });
      }).catch(fail);
    }

    var params = new URLSearchParams(window.location.search);
    var q = params.get("q") || "";
    input.value = q;
    if (header) header.value = q;
    run(q, false);
    more.addEventListener("click", function () { showMore().catch(fail); });
    input.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(function () { run(input.value, true); }, 150);
    });
    document.getElementById("search-form").addEventListener("submit", function (ev) {
      ev.preventDefault();
      clearTimeout(timer);
      run(input.value, true);
    });
    input.focus();
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
  window.GrexSearch = { Searcher: Searcher, load: load, shardFile: shardFile, loaded: loaded };
})();
