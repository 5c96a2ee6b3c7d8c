"""The offline docs site: build it from the notebooks (tools/docs.py --offline) into a temporary folder, open every
page in headless Chromium (DevTools protocol over --remote-debugging-pipe, no extra package), and check that each
page loads without script errors or network requests, shows no error output, shows every figure its notebook saved
(decoded: naturalWidth > 0), and that every relative link and anchor resolves.

Needs Debian's `chromium`; skipped without it, except under CI (`CI` set, as .ci/run does), where that fails.
The build executes the cells nbdev's docs processing executes (exported cells and cells with imports), which is
most of this test's time."""
import json, os, re, select, shutil, subprocess, sys, tempfile, time
from pathlib import Path
from urllib.parse import unquote, urlsplit
import pytest

ROOT = Path(__file__).resolve().parents[1]
NBS = ROOT / 'nbs'
sys.path.insert(0, str(ROOT / 'tools'))
import docs as docs_tool                                # noqa: E402  (tools/docs.py: the builder under test)

CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                  '--disable-background-networking', '--disable-component-update', '--disable-sync',
                  '--hide-scrollbars', '--mute-audio', '--window-size=1400,1000']

def _chromium():
    for name in ('chromium', 'chromium-browser', 'google-chrome'):
        if p := shutil.which(name): return p
    return '/usr/bin/chromium' if Path('/usr/bin/chromium').exists() else None

def _pages():
    return [n for _, n in docs_tool.plan(NBS)]

# ---------------------------------------------------------------- a minimal DevTools-protocol client over a pipe
class Chromium:
    "Headless Chromium driven through --remote-debugging-pipe (fd 3: commands in, fd 4: replies out, NUL-separated)."
    def __init__(self, exe, timeout=60):
        self.timeout, self.profile = timeout, tempfile.mkdtemp(prefix='chromium-profile-')
        to_chrome_r, self._w = os.pipe()
        self._r, from_chrome_w = os.pipe()
        # the pipe ends become the child's stdin/stdout, which sh moves to fds 3 and 4 before exec'ing Chromium
        self.proc = subprocess.Popen(['sh', '-c', 'exec 3<&0 4>&1 </dev/null >/dev/null; exec "$0" "$@"', exe,
                                      *CHROMIUM_FLAGS, f'--user-data-dir={self.profile}', '--remote-debugging-pipe',
                                      'about:blank'], stdin=to_chrome_r, stdout=from_chrome_w, stderr=subprocess.PIPE)
        os.close(to_chrome_r); os.close(from_chrome_w)
        self._buf, self._id, self.events = b'', 0, []
        target = self.call('Target.createTarget', url='about:blank')['targetId']
        self.session = self.call('Target.attachToTarget', targetId=target, flatten=True)['sessionId']
        for m in ('Page.enable', 'Runtime.enable', 'Network.enable'): self.call(m, session=True)

    def _send(self, msg): os.write(self._w, json.dumps(msg).encode() + b'\0')

    def _recv(self, deadline):
        while b'\0' not in self._buf:
            left = deadline - time.time()
            if left <= 0: raise TimeoutError('no reply from Chromium')
            if select.select([self._r], [], [], left)[0]:
                chunk = os.read(self._r, 1 << 20)
                if not chunk: raise RuntimeError('Chromium closed the pipe: ' + self._stderr())
                self._buf += chunk
        msg, self._buf = self._buf.split(b'\0', 1)
        return json.loads(msg)

    def _stderr(self):
        try: self.proc.kill(); return self.proc.stderr.read().decode(errors='replace')[-2000:]
        except Exception: return ''

    def call(self, method, session=False, **params):
        self._id += 1
        msg = {'id': self._id, 'method': method, 'params': params}
        if session: msg['sessionId'] = self.session
        self._send(msg)
        deadline = time.time() + self.timeout
        while True:
            m = self._recv(deadline)
            if m.get('id') == self._id:
                if 'error' in m: raise RuntimeError(f'{method}: {m["error"]}')
                return m.get('result', {})
            if 'method' in m: self.events.append(m)

    def wait_event(self, method, timeout=None):
        deadline = time.time() + (timeout or self.timeout)
        while True:
            for i, e in enumerate(self.events):
                if e['method'] == method: return self.events.pop(i)
            self.events.append(self._recv(deadline))

    def open(self, url):
        "Navigate and wait for the load event; returns the events seen on the way (console, exceptions, requests)."
        self.events.clear()
        r = self.call('Page.navigate', session=True, url=url)
        if r.get('errorText'): raise RuntimeError(f'{url}: {r["errorText"]}')
        self.wait_event('Page.loadEventFired')
        self.call('Runtime.evaluate', session=True, expression='new Promise(r => setTimeout(r, 300))', awaitPromise=True)
        return list(self.events)

    def eval(self, js):
        r = self.call('Runtime.evaluate', session=True, expression=js, returnByValue=True, awaitPromise=True)
        if 'exceptionDetails' in r: raise RuntimeError(f'evaluate failed: {r["exceptionDetails"]}')
        return r['result'].get('value')

    def screenshot(self, path):
        import base64
        Path(path).write_bytes(base64.b64decode(self.call('Page.captureScreenshot', session=True, format='png')['data']))

    def close(self):
        try: self.call('Browser.close')
        except Exception: pass
        try: self.proc.wait(10)
        except subprocess.TimeoutExpired: self.proc.kill()
        for fd in (self._r, self._w):
            try: os.close(fd)
            except OSError: pass
        shutil.rmtree(self.profile, ignore_errors=True)

# ---------------------------------------------------------------- what each notebook should show
_HIDDEN = {'hide', 'export', 'exporti', 'default_exp'}

def expected_figures(nb_path):
    "Figures (image/png, image/svg+xml outputs) of the cells the site shows, as nbdev's processing leaves them."
    png = svg = 0
    for c in json.loads(Path(nb_path).read_text())['cells']:
        if c['cell_type'] != 'code': continue
        lines = ''.join(c['source']).splitlines()
        dirs = {}
        for l in lines:
            if not l.strip(): continue
            m = re.match(r'^\s*#\|\s*([\w-]+):?\s*(.*)$', l)
            if not m: break
            dirs[m.group(1)] = m.group(2).strip()
        if dirs.keys() & _HIDDEN or dirs.get('include') == 'false' or dirs.get('output') == 'false': continue
        for o in c.get('outputs', []):
            d = o.get('data', {})
            if 'image/png' in d: png += 1
            elif 'image/svg+xml' in d: svg += 1
    return png, svg

PAGE_JS = r"""(() => {
  const q = s => Array.from(document.querySelectorAll(s));
  return {
    title: document.title,
    imgs: q('img').map(i => ({src: (i.getAttribute('src') || '').slice(0, 40), w: i.naturalWidth, ok: i.complete,
                              png: !!i.closest('.output_png')})),
    svgs: q('.output_svg svg').length,
    errors: q('.output_error, .output_stderr').map(e => e.innerText.slice(0, 300)),
    outputs_text: q('.output_area, .w-output').map(e => e.innerText).join('\n'),
    code_text: q('.input_area').map(e => e.innerText).join('\n'),
    main_text: (document.querySelector('main') || document.body).innerText,
    links: q('a[href]').map(a => ({href: a.getAttribute('href'), side: !!a.closest('nav')})),
    ids: q('[id]').map(e => e.id).concat(q('a[name]').map(e => e.getAttribute('name'))),
  };
})()"""

# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope='module')
def chromium_exe():
    exe = _chromium()
    if exe is None:
        if os.environ.get('CI'): pytest.fail('chromium is not installed (CI: .ci/run installs it with apt-get)')
        pytest.skip('chromium is not installed (Debian: apt-get install chromium)')
    return exe

@pytest.fixture(scope='module')
def site(chromium_exe, tmp_path_factory):
    """Build the offline site once for this module; returns (site dir, build log, {page: failure message}).
    DOCS_SITE=<folder> checks a site built before (`tools/docs.py --offline --out <folder>`) instead."""
    if os.environ.get('DOCS_SITE'):
        d = Path(os.environ['DOCS_SITE'])
        return d, '(DOCS_SITE: built before)', {n: 'not in DOCS_SITE' for n in _pages() if not (d / f'{n}.html').exists()}
    d = tmp_path_factory.mktemp('docs')
    env = dict(os.environ, POSEDISTILL_DOCS_OFFLINE='1')
    t0 = time.time()
    r = subprocess.run([sys.executable, str(ROOT / 'tools/docs.py'), '--offline', '--keep-going',
                        '--out', str(d / 'site'), '--proc', str(d / 'proc')],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    log = r.stdout + r.stderr
    print(f'docs build: {time.time() - t0:.0f}s, exit {r.returncode}\n{log[-3000:]}')
    failures = {}
    for m in re.finditer(r'DOCS BUILD FAILED: (\S+)\.ipynb: (.*)', log): failures[m.group(1)] = m.group(2)
    if r.returncode and not failures: pytest.fail(f'docs build failed (exit {r.returncode}):\n{log[-5000:]}')
    return d / 'site', log, failures

@pytest.fixture(scope='module')
def browser(chromium_exe):
    b = Chromium(chromium_exe)
    yield b
    b.close()

_cache = {}
def _page_info(browser, path):
    if path not in _cache:
        events = browser.open(path.as_uri())
        _cache[path] = (browser.eval(PAGE_JS), events)
        if os.environ.get('DOCS_SCREENSHOTS'):
            browser.screenshot(Path(os.environ['DOCS_SCREENSHOTS']) / (path.stem + '.png'))
    return _cache[path]

# ---------------------------------------------------------------- tests
def test_builder_markdown_maths():
    "The small TeX typesetter: simple maths becomes HTML, anything else stays TeX (None)."
    assert docs_tool.tex2html(r'\sigma=0.026') == 'σ=0.026'
    assert '<sub>' in docs_tool.tex2html(r'x_{i}^2') and '<sup>' in docs_tool.tex2html(r'x_{i}^2')
    assert docs_tool.tex2html(r'\begin{pmatrix}a&b\end{pmatrix}') is None

@pytest.mark.parametrize('name', _pages())
def test_page(name, site, browser):
    site_dir, log, failures = site
    if name in failures: pytest.fail(f'{name}.ipynb failed to build: {failures[name]}')
    path = site_dir / f'{name}.html'
    assert path.exists(), f'{path.name} was not written; build log:\n{log[-3000:]}'
    info, events = _page_info(browser, path)
    problems = []
    # loads cleanly, offline
    for e in events:
        p = e.get('params', {})
        if e['method'] == 'Runtime.exceptionThrown':
            problems.append('script error: ' + json.dumps(p.get('exceptionDetails', {}))[:300])
        if e['method'] == 'Network.requestWillBeSent' and not p['request']['url'].startswith(('file:', 'data:', 'about:')):
            problems.append('network request at view time: ' + p['request']['url'][:120])
    # no error outputs
    problems += [f'error output: {t!r}' for t in info['errors']]
    for pat in ('Traceback (most recent call last)', 'NameError'):
        if pat in info['outputs_text']: problems.append(f'{pat!r} in an output')
    # nothing of Quarto's syntax shown as text
    if re.search(r'(?m)^#\|', info['code_text']): problems.append('a `#|` directive shown in code')
    if re.search(r'(?m)^(output-file|title):', info['main_text']): problems.append('front matter shown as text')
    # every saved figure is there and decodes
    png, svg = expected_figures(NBS / f'{name}.ipynb')
    shown_png = sum(i['png'] for i in info['imgs'])
    if shown_png < png: problems.append(f'{png} PNG figure(s) saved in the notebook, {shown_png} on the page')
    if info['svgs'] < svg: problems.append(f'{svg} SVG figure(s) saved in the notebook, {info["svgs"]} on the page')
    bad = [i['src'] for i in info['imgs'] if not i['ok'] or i['w'] == 0]
    if bad: problems.append(f'{len(bad)} image(s) do not decode: {bad[:3]}')
    # links and anchors
    for a in info['links']:
        href = a['href']
        if re.match(r'^[a-z][a-z0-9+.-]*:', href, re.I) or href.startswith('//'): continue   # external
        parts = urlsplit(href)
        target = path if not parts.path else (path.parent / unquote(parts.path)).resolve()
        where = 'sidebar' if a['side'] else 'text'
        if target.stem in failures: continue              # its own test reports the build failure
        if not target.exists():
            problems.append(f'{where} link {href!r}: {target.name} does not exist'); continue
        if parts.fragment and target.suffix == '.html':
            ids = set(info['ids']) if target == path else _ids(target)
            if unquote(parts.fragment) not in ids: problems.append(f'{where} link {href!r}: no anchor there')
    assert not problems, f'{name}.html:\n  ' + '\n  '.join(problems)

_ids_cache = {}
def _ids(path):
    if path not in _ids_cache:
        from bs4 import BeautifulSoup
        soup = BeautifulSoup(path.read_text(encoding='utf-8'), 'html.parser')
        _ids_cache[path] = {t['id'] for t in soup.find_all(id=True)} | {t['name'] for t in soup.find_all('a', attrs={'name': True})}
    return _ids_cache[path]

def test_sidebar_lists_every_page(site):
    "The sidebar of index.html has sidebar.yml's sections, in order, and links every page that was built."
    site_dir, _, failures = site
    html = (site_dir / 'index.html').read_text(encoding='utf-8')
    nav = html[html.index('<nav'):html.index('</nav>')]
    secs = re.findall(r'<div class="sec">([^<]*)</div>', nav)
    want = []
    for sec, _ in docs_tool.plan(NBS):
        if sec not in want: want.append(sec)
    assert secs == want
    for n in _pages():
        assert f'href="{n}.html"' in nav, n
