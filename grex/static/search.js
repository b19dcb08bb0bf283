/* grex site search: runs in the browser, no server, no network.
 *
 * Reads window.GREX_SEARCH (assets/search-index.js; format in grex/export/searchindex.py).
 * Query language (a subset of `grex search`):
 *   words            every word must match the start of a word in the thread
 *   "a phrase"       its words must all match; threads whose subject holds it rank first
 *   from:NAME        a message in the thread was sent by NAME (name or address words)
 *   person:NAME      NAME wrote or received a message in the thread
 *   topic:LABEL      the thread carries that topic
 *   subject:WORD     the subject holds the word
 *   date:2009-11     the thread was active then (YYYY, YYYY-MM or YYYY-MM-DD)
 *   -word, -from:X   leave out threads that match
 * Results: threads matching everything, ranked by subject matches, then most recent.
 * Output is built with textContent only: nothing from the index is parsed as HTML.
 */
(function () {
  "use strict";

  var PAGE = 50;
  var FIELDS = { from: "from", person: "person", topic: "topic" };

  function fold(s) {
    return s.toLowerCase().normalize("NFKD").replace(/\p{M}/gu, "");
  }

  function Searcher(data) {
    this.data = data;
    this.n = data.docs.length;
    this.stop = new Set(data.stop);
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

  Searcher.prototype.decode = function (field, i) {
    var key = field + ":" + i;
    var hit = this.cache[key];
    if (hit) return hit;
    var s = this.data[field][1][i];
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

  /* Docs holding a term that starts with `prefix` in `field`, as a 0/1 array. */
  Searcher.prototype.prefixSet = function (field, prefix) {
    var terms = this.data[field][0];
    var lo = 0, hi = terms.length;
    while (lo < hi) {
      var mid = (lo + hi) >> 1;
      if (terms[mid] < prefix) lo = mid + 1; else hi = mid;
    }
    var set = new Uint8Array(this.n);
    for (var i = lo; i < terms.length && terms[i].lastIndexOf(prefix, 0) === 0; i++) {
      var docs = this.decode(field, i);
      for (var j = 0; j < docs.length; j++) set[docs[j]] = 1;
    }
    return set;
  };

  Searcher.prototype.subjectSet = function (words) {
    var set = new Uint8Array(this.n);
    for (var d = 0; d < this.n; d++) {
      var subj = this.tokens(this.data.docs[d][1]);
      var all = true;
      for (var w = 0; w < words.length && all; w++) {
        var found = false;
        for (var k = 0; k < subj.length && !found; k++) found = subj[k].lastIndexOf(words[w], 0) === 0;
        all = found;
      }
      if (all) set[d] = 1;
    }
    return set;
  };

  Searcher.prototype.dateSet = function (value) {
    var set = new Uint8Array(this.n);
    var v = value.trim();
    for (var d = 0; d < this.n; d++) {
      var first = this.data.docs[d][2], last = this.data.docs[d][3];
      if (first.lastIndexOf(v, 0) === 0 || last.lastIndexOf(v, 0) === 0 ||
          (first.slice(0, v.length) < v && last.slice(0, v.length) > v)) set[d] = 1;
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
      if (field && !(field in FIELDS) && field !== "subject" && field !== "date") {
        value = m[2] + ":" + value; // an unknown prefix is just text
        field = "";
      }
      out.push({ neg: m[1] === "-", field: field, value: value, phrase: m[3] !== undefined });
    }
    return out;
  }

  Searcher.prototype.search = function (q) {
    var clauses = parse(q);
    var include = null, exclude = new Uint8Array(this.n);
    var boost = [], phrases = [], used = 0;
    for (var c = 0; c < clauses.length; c++) {
      var cl = clauses[c], set = null;
      if (cl.field === "date") {
        if (!/^\d{4}(-\d{2}(-\d{2})?)?$/.test(cl.value)) continue;
        set = this.dateSet(cl.value);
      } else {
        var words = this.tokens(cl.value);
        if (!words.length) continue;
        if (cl.field === "subject") {
          set = this.subjectSet(words);
        } else {
          var field = cl.field ? FIELDS[cl.field] : "text";
          for (var w = 0; w < words.length; w++) {
            var s = this.prefixSet(field, words[w]);
            if (set) { for (var i = 0; i < this.n; i++) set[i] &= s[i]; } else set = s;
          }
          if (!cl.field && !cl.neg) {
            boost = boost.concat(words);
            if (cl.phrase) phrases.push(fold(cl.value).trim());
          }
        }
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
    var hits = [];
    for (var d = 0; d < this.n; d++) {
      if ((include ? include[d] : 1) && !exclude[d]) hits.push(d);
    }
    var docs = this.data.docs, self = this;
    var score = {};
    hits.forEach(function (d) {
      var subj = fold(docs[d][1]), st = self.tokens(docs[d][1]), sc = 0;
      boost.forEach(function (b) {
        for (var i = 0; i < st.length; i++) if (st[i].lastIndexOf(b, 0) === 0) { sc += 2; break; }
      });
      phrases.forEach(function (p) { if (subj.indexOf(p) >= 0) sc += 5; });
      score[d] = sc;
    });
    hits.sort(function (a, b) { return (score[b] - score[a]) || (a - b); });
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
    a.href = doc[0];
    li.appendChild(a);
    var meta = doc[3] + " · " + doc[5] + " message" + (doc[5] === 1 ? "" : "s");
    if (doc[4]) meta += " · " + doc[4];
    li.appendChild(el("span", "meta", meta));
    if (doc[6]) li.appendChild(el("p", "excerpt", doc[6]));
    return li;
  }

  function start() {
    var data = window.GREX_SEARCH;
    var input = document.getElementById("q");
    var status = document.getElementById("search-status");
    var list = document.getElementById("search-results");
    var more = document.getElementById("search-more");
    var header = document.getElementById("site-q");
    if (!input || !status || !list) return;
    if (!data || data.v !== 1) {
      status.textContent = "The search index is missing or from another version of grex.";
      return;
    }
    var searcher = new Searcher(data);
    var current = [], shown = 0, timer = null;

    function showMore() {
      var frag = document.createDocumentFragment();
      var end = Math.min(shown + PAGE, current.length);
      for (var i = shown; i < end; i++) frag.appendChild(renderHit(data.docs[current[i]]));
      list.appendChild(frag);
      shown = end;
      more.hidden = shown >= current.length;
    }

    function run(q, updateUrl) {
      list.textContent = "";
      shown = 0;
      current = [];
      if (!q.trim()) {
        status.textContent = "Type words to search " + data.docs.length + " threads.";
        more.hidden = true;
        return;
      }
      var res = searcher.search(q);
      current = res.hits;
      if (res.empty) {
        status.textContent = "Nothing to search for in “" + q + "” (only very common words?).";
      } else {
        status.textContent = current.length + " thread" + (current.length === 1 ? "" : "s") +
          " for “" + q + "”";
      }
      showMore();
      document.title = q + " · Search";
      if (updateUrl) {
        try {
          history.replaceState(null, "", "?q=" + encodeURIComponent(q));
        } catch (e) { /* some file:// setups refuse: the results are shown anyway */ }
      }
    }

    var params = new URLSearchParams(window.location.search);
    var q = params.get("q") || "";
    input.value = q;
    if (header) header.value = q;
    run(q, false);
    more.addEventListener("click", showMore);
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
  window.GrexSearcher = Searcher;
})();
