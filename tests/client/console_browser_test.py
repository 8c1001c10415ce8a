"""The web console in a real browser: headless Chromium driven over the
DevTools protocol (on a pipe, no extra packages), against a real server that
requires API keys.

It seeds a text collection through the JSON API, opens the console, answers
its key prompt (a wrong key first: the server's error must show), searches
by typing and pressing Enter, opens the top hit's attention map with a
mouse click, and checks the page against the JSON API itself:
  - the hits are the API's, and the snippets are highlighted with <mark>;
  - the heatmap has m x n cells whose weights equal the API's for the very
    request the console sent (read off the network), labelled with the
    query's and the document's token texts, with a contribution bar a row;
  - the temperature slider, moved with the keyboard, re-asks the server and
    the map sharpens, down to MaxSim (one 1 a row);
  - the stage waterfall shows queue, encode, ann, fetch and rerank;
  - every form control has a label, nothing overflows at 1280x800 or on a
    phone, and the page logs no error (its Content-Security-Policy included).
It saves two screenshots at 1280x800 into OUT_DIR: console.png (the
collections, the search and its hits) and console-attention.png (the top
hit's attention map).

  ATTNSEARCH_HTTP=127.0.0.1:PORT ATTNSEARCH_READ_KEY=.. ATTNSEARCH_WRITE_KEY=.. \
    python3 console_browser_test.py OUT_DIR
"""

import base64
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

HTTP = os.environ["ATTNSEARCH_HTTP"]
READ_KEY = os.environ["ATTNSEARCH_READ_KEY"]
WRITE_KEY = os.environ["ATTNSEARCH_WRITE_KEY"]
WRONG_KEY = "not-a-key-of-this-server"
BASE = f"http://{HTTP}"


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def check(condition, message):
    if not condition:
        fail(message)


# ---- The JSON API, as the oracle ---------------------------------------------


def api(rpc, body, key):
    """POSTs /v1/<rpc>; returns (HTTP status, parsed body)."""
    request = urllib.request.Request(
        f"{BASE}/v1/{rpc}", data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def api_ok(rpc, body, key=READ_KEY):
    status, answer = api(rpc, body, key)
    check(status == 200, f"{rpc}: HTTP {status}: {answer}")
    return answer


TOPIC_NAMES = ["energy", "baking", "sea"]


def seed_collection():
    """A seeded text corpus on three topics, plus documents with rare words."""
    topics = [["solar", "panel", "grid", "battery", "voltage", "power", "energy", "cable"],
              ["recipe", "oven", "flour", "butter", "sugar", "bake", "dough", "bread"],
              ["ship", "harbor", "sailor", "anchor", "deck", "voyage", "captain", "crew"]]
    common = ["the", "a", "of", "and", "with", "in", "on", "is", "new", "old", "some", "near"]
    rng = random.Random(23)
    docs = []
    for i in range(90):
        words = [rng.choice(topics[i % 3] if rng.random() < 0.5 else common) for _ in range(14)]
        docs.append({"id": f"t{i}", "text": " ".join(words).capitalize() + ".",
                     "metadata": {"topic": TOPIC_NAMES[i % 3]}})
    docs += [{"id": "turbine", "text": "The old wind Turbine on the northern ridge feeds the grid "
                                       "with power when the wind turns."},
             {"id": "saffron", "text": "A recipe for risotto with saffron and butter."}]
    api_ok("CreateCollection", {"name": "docs", "config": {"dim": 256}}, WRITE_KEY)
    api_ok("Upsert", {"collection": "docs", "documents": docs}, WRITE_KEY)
    api_ok("TrainEncoder", {"collection": "docs"}, WRITE_KEY)
    return len(docs)


# ---- Chromium over the DevTools protocol --------------------------------------


class Browser:
    """Headless Chromium with --remote-debugging-pipe: commands on its fd 3,
    answers and events on its fd 4, each a JSON text ended by NUL."""

    def __init__(self):
        exe = shutil.which("chromium") or shutil.which("chromium-browser")
        check(exe is not None, "chromium is not installed (scripts/test.sh installs it)")
        self.profile = tempfile.mkdtemp(prefix="attn-chromium-")
        to_child_r, self.to_child = os.pipe()
        self.from_child, from_child_w = os.pipe()
        os.set_inheritable(to_child_r, True)
        os.set_inheritable(from_child_w, True)

        def at_fds_3_and_4():
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)

        args = [exe, "--headless=new", "--remote-debugging-pipe", "--no-first-run",
                "--no-default-browser-check", "--disable-gpu", "--disable-extensions",
                "--disable-background-networking", "--disable-sync", "--mute-audio",
                f"--user-data-dir={self.profile}", "--window-size=1280,800"]
        if os.geteuid() == 0:
            args.append("--no-sandbox")  # Chromium's sandbox refuses to run as root
        self.process = subprocess.Popen(args + ["about:blank"], preexec_fn=at_fds_3_and_4,
                                        close_fds=False, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
        os.close(to_child_r)
        os.close(from_child_w)
        self.buffer = b""
        self.next_id = 0
        self.events = []
        self.session = None

    def close(self):
        try:
            self.send("Browser.close", session=False)
        except Exception:  # already gone
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        shutil.rmtree(self.profile, ignore_errors=True)

    def _read_message(self, deadline):
        while b"\0" not in self.buffer:
            if time.time() > deadline:
                fail("the browser did not answer in time")
            chunk = os.read(self.from_child, 1 << 16)
            if not chunk:
                fail("the browser closed its DevTools pipe")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method, params=None, session=True, timeout=30):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session and self.session:
            message["sessionId"] = self.session
        os.write(self.to_child, json.dumps(message).encode() + b"\0")
        deadline = time.time() + timeout
        while True:
            answer = self._read_message(deadline)
            if answer.get("id") == self.next_id:
                if "error" in answer:
                    fail(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self.events.append(answer)

    def open(self, url, width=1280, height=800):
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)
        attached = self.send("Target.attachToTarget",
                             {"targetId": target["targetId"], "flatten": True}, session=False)
        self.session = attached["sessionId"]
        for domain in ("Page", "Runtime", "Network", "Log"):
            self.send(f"{domain}.enable")
        self.viewport(width, height)
        self.send("Page.navigate", {"url": url})
        self.wait_for("document.readyState === 'complete' && !!document.getElementById('hits')")

    def viewport(self, width, height, mobile=False):
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile})

    def js(self, expression):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            fail(f"script error in {expression!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression, timeout=30, what=None):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.js(expression):
                return
            time.sleep(0.05)
        fail(f"timed out waiting for {what or expression}")

    def click(self, selector):
        """A real mouse click at the middle of the element."""
        box = self.js(f"""(() => {{
            const e = document.querySelector({json.dumps(selector)});
            if (!e) return null;
            e.scrollIntoView({{block: 'center'}});
            const r = e.getBoundingClientRect();
            return [r.x + r.width / 2, r.y + r.height / 2];
        }})()""")
        check(box is not None, f"no element {selector}")
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", {"type": kind, "x": box[0], "y": box[1],
                                                   "button": "left", "clickCount": 1})

    def type(self, text):
        self.send("Input.insertText", {"text": text})

    def key(self, key, code=None, key_code=0):
        for kind in ("rawKeyDown", "keyUp"):
            self.send("Input.dispatchKeyEvent", {"type": kind, "key": key, "code": code or key,
                                                 "windowsVirtualKeyCode": key_code})

    def press_enter(self):
        self.send("Input.dispatchKeyEvent", {"type": "keyDown", "key": "Enter", "code": "Enter",
                                             "windowsVirtualKeyCode": 13, "text": "\r"})
        self.send("Input.dispatchKeyEvent", {"type": "keyUp", "key": "Enter", "code": "Enter",
                                             "windowsVirtualKeyCode": 13})

    def searches_sent(self):
        """The bodies of the Search calls the page has made, in order."""
        self.js("1")  # collect the events that arrived meanwhile
        bodies = []
        for event in self.events:
            if event.get("method") == "Network.requestWillBeSent":
                request = event["params"]["request"]
                if request["url"].endswith("/v1/Search") and "postData" in request:
                    bodies.append(json.loads(request["postData"]))
        return bodies

    def errors(self):
        """What the page reported as errors: exceptions, console errors, CSP."""
        out = []
        for event in self.events:
            method = event.get("method")
            if method == "Runtime.exceptionThrown":
                out.append(event["params"]["exceptionDetails"].get("text"))
            elif method == "Log.entryAdded" and event["params"]["entry"]["level"] == "error":
                entry = event["params"]["entry"]
                # The console's 401s are expected: the key prompt is their answer.
                if entry.get("source") == "network" and "401" in entry.get("text", ""):
                    continue
                out.append(entry.get("text"))
            elif method == "Runtime.consoleAPICalled" and event["params"]["type"] == "error":
                out.append(str(event["params"]["args"]))
        return out

    def screenshot(self, path):
        shot = self.send("Page.captureScreenshot", {"format": "png"})
        with open(path, "wb") as f:
            f.write(base64.b64decode(shot["data"]))


# ---- The test -----------------------------------------------------------------


def main():
    out_dir = sys.argv[1]
    documents = seed_collection()

    # The server's own messages for a missing and a wrong key.
    status, missing = api("ListCollections", {}, None)
    check(status == 401, f"ListCollections without a key: HTTP {status}")
    status, wrong = api("ListCollections", {}, WRONG_KEY)
    check(status == 401, f"ListCollections with a wrong key: HTTP {status}")

    browser = Browser()
    try:
        browser.open(f"{BASE}/")
        b = browser
        check(b.js("document.title") == "attnsearch console", "the page's title")

        # No key yet: the prompt opens with the server's error.
        b.wait_for("document.getElementById('key-dialog').open", what="the key prompt")
        b.wait_for("document.getElementById('key-error').textContent !== ''")
        shown = b.js("document.getElementById('key-error').textContent")
        check(shown == f"UNAUTHENTICATED: {missing['error']['message']}",
              f"the prompt shows {shown!r}, the server said {missing['error']}")

        # A wrong key: the server's error for it shows, and the prompt stays.
        b.click("#key-input")
        b.type(WRONG_KEY)
        b.click("#key-use")
        expected = f"UNAUTHENTICATED: {wrong['error']['message']}"
        b.wait_for(f"document.getElementById('key-error').textContent === {json.dumps(expected)}"
                   " && document.getElementById('key-dialog').open",
                   what=f"the wrong key's error {expected!r}")

        # A key that an HTTP header cannot carry: the prompt says so and stays.
        b.click("#key-input")
        b.type("k\u00e9y-\u043a\u043b\u044e\u0447")
        b.click("#key-use")
        b.wait_for("document.getElementById('key-error').textContent.includes('printable ASCII')"
                   " && document.getElementById('key-dialog').open",
                   what="the prompt refusing a non-ASCII key")

        # The right key: the collections load.
        b.click("#key-input")
        b.type(READ_KEY)
        b.press_enter()
        b.wait_for("document.querySelectorAll('#collections tbody tr th').length > 0",
                   what="the collections table")
        check(not b.js("document.getElementById('key-dialog').open"), "the prompt closed")
        info = api_ok("GetCollection", {"name": "docs"})["collection"]
        row = b.js("[...document.querySelectorAll('#collections tbody tr')[0].cells].map(c => c.textContent)")
        check(row[0] == "docs" and row[1] == f"{int(info['num_documents']):,}" and row[2] == "0",
              f"the collections row {row} (documents {documents})")
        check("text, version 1" in row[4], f"the encoder cell {row[4]!r}")
        check(b.js("document.querySelector('input[name=kind][value=text]').checked"),
              "a text collection queries as text")

        # Search: type, press Enter.
        query = "wind turbine grid"
        b.click("#query")
        b.type(query)
        b.press_enter()
        b.wait_for("document.querySelectorAll('#hits > li').length > 0", what="the hits")
        sent = b.searches_sent()
        check(len(sent) == 1 and sent[0]["text"] == query and sent[0]["top_k"] == 10,
              f"the console's search {sent}")
        truth = api_ok("Search", sent[0])
        ids = b.js("[...document.querySelectorAll('#hits > li')].map(li => li.dataset.id)")
        check(ids == [h["id"] for h in truth["hits"]], f"hits {ids} vs the API's")
        check(ids[0] == "turbine", f"the top hit is {ids[0]}")
        marks = b.js("[...document.querySelectorAll('#hits > li:first-child .snippet mark')]"
                     ".map(m => m.textContent.toLowerCase())")
        check({"wind", "turbine", "grid"} <= set(marks), f"the top snippet's highlights {marks}")
        snippet = b.js("document.querySelector('#hits > li:first-child .snippet').textContent")
        check("\u0002" not in snippet and "\u0003" not in snippet and "<em>" not in snippet,
              f"no raw marks in the snippet {snippet!r}")

        # The waterfall: the five stages, each as long as the API said.
        stages = b.js("[...document.querySelectorAll('#waterfall li')].map(li => li.dataset.stage)")
        check(stages == ["queue", "encode", "ann", "fetch", "rerank"], f"the waterfall {stages}")
        check(b.js("document.querySelector('#waterfall .stage-rerank').getBoundingClientRect().width") > 0,
              "the rerank bar has a width")
        b.js("window.scrollTo(0, 0)")
        b.screenshot(os.path.join(out_dir, "console.png"))

        # The top hit's attention map, by a mouse click.
        b.click("#hits > li:first-child .show-attention")
        b.wait_for("document.querySelectorAll('#heatmap td.cell').length > 0", what="the heatmap")

        def check_map(body):
            truth = api_ok("Search", body)
            hit = next(h for h in truth["hits"] if h["id"] == "turbine")
            attention = hit["attention"]
            m, n = attention["query_tokens"], attention["document_tokens"]
            cells = b.js("[...document.querySelectorAll('#heatmap tbody tr')].map(tr =>"
                         " [...tr.querySelectorAll('td.cell')].map(td => td.dataset.weight))")
            check(len(cells) == m and all(len(r) == n for r in cells),
                  f"the heatmap is {len(cells)} x {len(cells[0]) if cells else 0}, the API's {m} x {n}")
            weights = attention["weights"]
            for i in range(m):
                for j in range(n):
                    check(float(cells[i][j]) == float(weights[i * n + j]),
                          f"cell ({i}, {j}): {cells[i][j]} vs the API's {weights[i * n + j]}")
            rows = b.js("[...document.querySelectorAll('#heatmap tbody th')].map(th => th.textContent)")
            check(rows == truth["query_token_texts"], f"row labels {rows} vs {truth['query_token_texts']}")
            cols = b.js("[...document.querySelectorAll('#heatmap thead th.col-label')].map(th => th.textContent)")
            check(cols == attention["document_token_texts"], f"column labels {cols}")
            bars = b.js("[...document.querySelectorAll('#heatmap td.contribution')].map(td =>"
                        " Number(td.dataset.contribution))")
            contribution = [0.0] * m
            for match in hit.get("matches", []):
                contribution[match.get("query_token", 0)] += match.get("contribution", 0.0)
            check(len(bars) == m and all(abs(x - y) <= 1e-6 * max(1.0, abs(y))
                                         for x, y in zip(bars, contribution)),
                  f"contribution bars {bars} vs {contribution}")
            return [[float(x) for x in r] for r in cells]

        bodies = b.searches_sent()
        check(len(bodies) == 2 and bodies[1].get("attention_map") is True, f"attention request {bodies[-1:]}")
        # The first map is the search's own request (its temperature, so the
        # very scores shown), with maps for the hits up to the chosen one.
        expected = dict(bodies[0], attention_map=True, explain=True, top_k=1)
        check(bodies[1] == expected, f"the first map's request {bodies[1]} vs {expected}")
        first_temperature = bodies[1].get("temperature", 0.06)  # the text default
        before = check_map(bodies[1])
        check(all(abs(sum(r) - 1) < 1e-3 for r in before), "each row sums to 1")
        b.js("document.getElementById('attention').scrollIntoView()")
        b.screenshot(os.path.join(out_dir, "console-attention.png"))

        def drawn_request():
            """Waits for the map of the slider's temperature; returns the request behind it."""
            b.wait_for("document.getElementById('heatmap').dataset.temperature === "
                       "String(sliderTemperature())", what="the map of the slider's temperature")
            t = float(b.js("document.getElementById('heatmap').dataset.temperature"))
            for body in reversed(b.searches_sent()):
                if body.get("attention_map") and (body.get("temperature", 0.0) == t or
                                                  (t == 0 and body["rerank"] == "RERANK_MODE_MAXSIM")):
                    return body
            fail(f"no request at the drawn temperature {t}")

        # Sharper: three steps left with the keyboard on the slider.
        b.js("document.getElementById('attention-temperature').focus()")
        for _ in range(3):
            b.key("ArrowLeft", key_code=37)
        colder = drawn_request()
        check(colder["rerank"] == "RERANK_MODE_ATTENTION" and colder["temperature"] < first_temperature,
              f"the slider re-asked colder: {colder}")
        after = check_map(colder)
        check(sum(max(r) for r in after) > sum(max(r) for r in before),
              "a lower temperature sharpens the rows")

        # The far left: MaxSim, one 1 in every row.
        b.key("Home", key_code=36)
        last = drawn_request()
        check(last["rerank"] == "RERANK_MODE_MAXSIM" and "temperature" not in last,
              f"the slider's far left asks MaxSim: {last}")
        maxsim = check_map(last)
        check(all(sorted(r)[-1] == 1.0 and sum(r) == 1.0 for r in maxsim), "MaxSim rows are one-hot")

        # Diversification: at most one hit per topic, then near-duplicates.
        def search_with(fields, query_text):
            before = len(b.searches_sent())
            for element, value in fields.items():
                b.js(f"document.getElementById({json.dumps(element)}).value = {json.dumps(value)}")
            b.js(f"document.getElementById('query').value = {json.dumps(query_text)}")
            b.js("document.getElementById('hits-summary').textContent = ''")
            b.click("#search-button")
            b.wait_for("document.getElementById('hits-summary').textContent !== '' || "
                       "document.getElementById('search-error').textContent !== ''",
                       what="the diversified search's answer")
            error = b.js("document.getElementById('search-error').textContent")
            check(error == "", f"the search failed: {error!r}")
            sent = b.searches_sent()
            check(len(sent) == before + 1, f"{len(sent) - before} searches sent")
            return sent[-1]

        def hit_ids():
            return b.js("[...document.querySelectorAll('#hits > li')].map(li => li.dataset.id)")

        sent = search_with({"collapse-field": "topic", "max-per-value": ""}, "bread butter oven ship")
        check(sent.get("diversify") == {"collapse_field": "topic"}, f"the collapse request {sent}")
        truth = api_ok("Search", sent)
        ids = hit_ids()
        check(ids == [h["id"] for h in truth["hits"]], f"collapsed hits {ids} vs the API's")
        topics = [TOPIC_NAMES[int(i[1:]) % 3] for i in ids if i[0] == "t" and i[1:].isdigit()]
        check(len(topics) == len(set(topics)), f"one hit per topic: {ids}")
        left_out = int(truth["sources"].get("diversified", 0))
        check(left_out > 0, f"the API left out {left_out}")
        summary = b.js("document.getElementById('hits-summary').textContent")
        check(f"{left_out} left out by diversification" in summary, f"the summary {summary!r}")

        sent = search_with({"collapse-field": "", "max-similarity": "0.5"}, "bread butter oven")
        check(sent.get("diversify") == {"max_similarity": 0.5}, f"the near-duplicates request {sent}")
        truth = api_ok("Search", sent)
        check(hit_ids() == [h["id"] for h in truth["hits"]], "near-duplicate hits vs the API's")
        plain = dict(sent)
        del plain["diversify"]
        check(len(truth["hits"]) < len(api_ok("Search", plain)["hits"]) or
              int(truth["sources"].get("diversified", 0)) > 0,
              "max_similarity 0.5 leaves something out")

        # A cosine above 1 is refused in the page, naming the field; nothing is sent.
        before = len(b.searches_sent())
        b.js("document.getElementById('max-similarity').value = '2'")
        b.click("#search-button")
        b.wait_for("document.getElementById('search-error').textContent !== ''", what="the error")
        error = b.js("document.getElementById('search-error').textContent")
        check(error.startswith("near-duplicates:"), f"the error {error!r}")
        check(len(b.searches_sent()) == before, "no search was sent")
        b.js("document.getElementById('max-similarity').value = ''")

        # Labels on every control; no horizontal overflow at 1280x800 or on a phone.
        unlabelled = b.js("[...document.querySelectorAll('input, select, textarea')]"
                          ".filter(e => e.labels.length === 0 && !e.getAttribute('aria-label')).map(e => e.id)")
        check(unlabelled == [], f"controls without a label: {unlabelled}")
        for width, height, mobile in ((1280, 800, False), (390, 844, True)):
            b.viewport(width, height, mobile)
            overflow = b.js("document.documentElement.scrollWidth - document.documentElement.clientWidth")
            check(overflow <= 0, f"the page overflows by {overflow}px at {width}x{height}")
        b.viewport(1280, 800)

        errors = b.errors()
        check(errors == [], f"the page reported errors: {errors}")
    finally:
        browser.close()
    print("console in Chromium: OK")


if __name__ == "__main__":
    main()
