"""Build the documentation site into `_docs/` (`make docs`). Installs nothing.

    .venv/bin/python tools/docs.py [--only NAMES] [--offline] [--out DIR] [--proc DIR] [--force]

Both builders start with nbdev's notebook processing (the processors `nbdev_proc_nbs` runs: front matter
from the title cell, `show_doc` after exported definitions, `#| hide` / `#| export` removed, `#| exports`
code shown folded, ...) into a copy of the notebooks (`_proc/`). That processing executes every exported
cell and every cell holding an import (nbdev's `exec_show_docs`); here it runs in one child process with
cwd `nbs/`, `OMP_NUM_THREADS=1`, `MPLBACKEND=Agg` and `IN_TEST` unset, one notebook after the other. A
notebook whose processing raises fails the build, naming the notebook and the cell.

- `quarto` on PATH: the processed notebooks are rendered by `quarto render` (nbdev_docs' last step) with
  `_quarto.yml` and `nbs/sidebar.yml`. nbdev_docs itself is not called: it installs Quarto (and pip
  installs the package) when Quarto is missing and rewrites README.md, which tools/readme.py owns.
- otherwise, or with `--offline` / `POSEDISTILL_DOCS_OFFLINE=1`: a static HTML site made with nbconvert,
  one page per notebook (`index.html`, `00_keypoints.html`, ...), the sidebar of `nbs/sidebar.yml`, and
  nothing loaded from the network when it is viewed (no MathJax: maths is typeset as plain HTML where it
  is simple, shown as TeX where it is not; widgets are drawn from their saved state, without a kernel).
"""
import argparse, html, json, os, re, shutil, subprocess, sys, time, warnings
from configparser import ConfigParser
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def log(*a): print(*a, flush=True)

class DocsError(Exception): pass

# ---------------------------------------------------------------- settings, sidebar, notebook list
def settings():
    p = ConfigParser(delimiters=['=']); p.read(ROOT / 'settings.ini')
    return p['DEFAULT']

def _entries(items, section=None):
    "Flatten Quarto sidebar `contents` into (section, file) pairs."
    for it in items or []:
        if isinstance(it, str): yield section, it
        elif isinstance(it, dict):
            if 'contents' in it: yield from _entries(it['contents'], it.get('section', section))
            elif 'href' in it: yield section, it['href']

def read_sidebar(nbs):
    import yaml
    f = nbs / 'sidebar.yml'
    if not f.exists(): return []
    d = yaml.safe_load(f.read_text()) or {}
    return list(_entries(d.get('website', {}).get('sidebar', {}).get('contents', [])))

def plan(nbs, only=None):
    """Pages in sidebar order: [(section, name)]. Sidebar entries whose notebook is missing are skipped
    with a warning; notebooks missing from the sidebar are added under 'Other' with a warning."""
    have = {p.stem for p in nbs.glob('*.ipynb') if not p.name.startswith(('_', '.'))}
    pages, seen = [], set()
    for sec, f in read_sidebar(nbs):
        name = Path(f).stem
        if not f.endswith('.ipynb'): continue
        if name not in have: log(f'warning: sidebar.yml lists {f}, which is not in {nbs.name}/: skipped'); continue
        if name not in seen: pages.append((sec, name)); seen.add(name)
    for name in sorted(have - seen):
        log(f'warning: {name}.ipynb is not in sidebar.yml: listed under "Other"')
        pages.append(('Other', name))
    if only:
        want = {Path(o).stem for o in only}
        unknown = want - have
        if unknown: raise DocsError(f'--only: no such notebook(s) in {nbs}: {", ".join(sorted(unknown))}')
    return pages

# ---------------------------------------------------------------- nbdev processing (child process)
def _worker(out, srcs, keep_going=False):
    "Runs in the child: nbdev's docs processors over each notebook (cwd = notebooks folder)."
    from execnb.nbio import read_nb, write_nb
    from nbdev.processors import FilterDefaults
    out, failed, done = Path(out), [], 0
    for src in map(Path, srcs):
        t0 = time.time()
        nb = read_nb(src)
        with warnings.catch_warnings(record=True) as ws:
            warnings.simplefilter('always')
            try: FilterDefaults()(nb)
            except Exception as e:
                _report_failure(src, e)
                (out / src.name).unlink(missing_ok=True)
                failed.append(src.stem)
                if keep_going: continue
                break
        for w in ws:
            msg = str(w.message)
            if 'imports and other code' in msg:
                first = next((l for l in msg.split('---')[1].strip().splitlines() if not l.startswith('#|')), '')
                log(f'  warning: {src.name}: a cell mixes imports with other code, so it runs at docs time: {first!r}')
        write_nb(nb, out / src.name); done += 1
        log(f'  processed {src.name} in {time.time() - t0:.1f}s')
    (out / '_failed.json').write_text(json.dumps({'failed': failed, 'done': done}))
    sys.exit(1 if failed else 0)

def _report_failure(src, e):
    "Name the source notebook's cell (nbdev's message names the processed cell) and the error."
    cause = e.__cause__ or e
    m = re.search(r'in cell \d+ :\n(.*)', str(e), re.S)
    where = ''
    if m:
        body = m.group(1).strip()
        cells = json.loads(src.read_text())['cells']
        for i, c in enumerate(cells):
            code = [l for l in ''.join(c['source']).splitlines() if not l.startswith('#|')]
            if c['cell_type'] == 'code' and '\n'.join(code).strip() == body.strip():
                where = f'cell {i} ({code[0] if code else ""!r})'; break
        else:
            sd = re.search(r'show_doc\((.+)\)', body)
            where = (f'the show_doc({sd.group(1)}) cell nbdev adds after its definition' if sd
                     else f'cell starting {body.splitlines()[0]!r}')
    import traceback
    tb = ''.join(traceback.format_exception(type(cause), cause, cause.__traceback__)[-6:])
    print(f'\nDOCS BUILD FAILED: {src.name}: {where}: {type(cause).__name__}: {cause}\n{tb}', file=sys.stderr, flush=True)

def _newest_input():
    "Processed copies older than this are stale: the settings or the library changed (show_doc reads it)."
    fs = [ROOT / 'settings.ini'] + list((ROOT / 'posedistill').glob('*.py'))
    return max(f.stat().st_mtime for f in fs if f.exists())

def process(nbs, names, proc, force=False, keep_going=False):
    """nbdev-process `names` from `nbs` into `proc` (skipping ones whose processed copy is up to date).
    Returns the names whose processing failed (only with `keep_going`; otherwise a failure raises)."""
    proc.mkdir(parents=True, exist_ok=True)
    newest = _newest_input()
    todo = []
    for n in names:
        src, dst = nbs / f'{n}.ipynb', proc / f'{n}.ipynb'
        if force or not dst.exists() or dst.stat().st_mtime < max(src.stat().st_mtime, newest): todo.append(src)
        else: log(f'  {n}.ipynb: processed copy is up to date')
    if not todo: return []
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1', MPLBACKEND='Agg', PYTHONUNBUFFERED='1')
    env.pop('IN_TEST', None)
    t0 = time.time()
    (proc / '_failed.json').unlink(missing_ok=True)
    r = subprocess.run([sys.executable, str(Path(__file__).resolve()), '--worker', str(proc.resolve()),
                        *[str(s.resolve()) for s in todo]] + (['--keep-going'] if keep_going else []), cwd=nbs, env=env)
    res = json.loads((proc / '_failed.json').read_text()) if (proc / '_failed.json').exists() else None
    (proc / '_failed.json').unlink(missing_ok=True)
    if res is None: raise DocsError(f'notebook processing crashed (exit {r.returncode})')
    failed = res['failed']
    log(f'processed {res["done"]} notebook(s) in {time.time() - t0:.0f}s'
        + (f'; FAILED: {", ".join(failed)}' if failed else ''))
    if failed and not keep_going:
        raise DocsError(f'processing {failed[0]}.ipynb failed (message above); the build stops '
                        '(--keep-going builds the other pages and fails at the end)')
    return failed

# ---------------------------------------------------------------- Quarto builder
_nbdev_yml = """project:
  output-dir: {doc_path}

website:
  title: "{title}"
  site-url: "{doc_host}{doc_baseurl}"
  description: "{description}"
  repo-branch: {branch}
  repo-url: "{git_url}"
"""

def build_quarto(nbs, pages, only, out, proc, force, keep_going=False):
    import yaml
    names = [n for _, n in pages if not only or n in only]
    failed = process(nbs, names, proc, force)
    for f in nbs.iterdir():                             # _quarto.yml (a symlink: copied as a file), styles.css, ...
        if f.is_file() and f.suffix not in ('.ipynb', '.pt') and not f.name.startswith('.') and f.name != 'sidebar.yml':
            shutil.copy2(f, proc / f.name)
    have = {n for _, n in pages}                        # the sidebar without entries whose notebook is missing
    sb = yaml.safe_load((nbs / 'sidebar.yml').read_text())
    def keep(items):
        res = []
        for it in items:
            if isinstance(it, str):
                if not it.endswith('.ipynb') or Path(it).stem in have: res.append(it)
            elif isinstance(it, dict) and 'contents' in it:
                it = dict(it, contents=keep(it['contents']))
                if it['contents']: res.append(it)
            else: res.append(it)
        return res
    sb['website']['sidebar']['contents'] = keep(sb['website']['sidebar']['contents'])
    (proc / 'sidebar.yml').write_text(yaml.safe_dump(sb, sort_keys=False))
    s = settings()
    (proc / 'nbdev.yml').write_text(_nbdev_yml.format(doc_path=Path(s.get('doc_path', '_docs')).name,
        **{k: s.get(k, '') for k in ['title', 'description', 'branch', 'git_url', 'doc_host', 'doc_baseurl']}))
    for p in proc.glob('*.ipynb'):                      # stale copies of deleted notebooks
        if p.stem not in have: p.unlink()
    cmd = ['quarto', 'render'] + ([f'{n}.ipynb' for n in names] if only else []) + ['--no-cache']
    log('$ ' + ' '.join(cmd))
    if subprocess.run(cmd, cwd=proc).returncode: raise DocsError('quarto render failed')
    built = proc / Path(s.get('doc_path', '_docs')).name
    if only: shutil.copytree(built, out, dirs_exist_ok=True)
    else:
        shutil.rmtree(out, ignore_errors=True); shutil.move(str(built), str(out))

# ---------------------------------------------------------------- offline builder: maths
_SYM = dict(alpha='α', beta='β', gamma='γ', delta='δ', epsilon='ϵ', varepsilon='ε', zeta='ζ', eta='η', theta='θ',
    iota='ι', kappa='κ', lambda_='λ', mu='μ', nu='ν', xi='ξ', pi='π', rho='ρ', sigma='σ', tau='τ', upsilon='υ',
    phi='ϕ', varphi='φ', chi='χ', psi='ψ', omega='ω', Gamma='Γ', Delta='Δ', Theta='Θ', Lambda='Λ', Xi='Ξ',
    Pi='Π', Sigma='Σ', Phi='Φ', Psi='Ψ', Omega='Ω', times='×', cdot='·', le='≤', leq='≤', ge='≥', geq='≥',
    approx='≈', ne='≠', neq='≠', equiv='≡', sim='∼', propto='∝', pm='±', mp='∓', to='→', mapsto='↦',
    leftarrow='←', rightarrow='→', Rightarrow='⇒', gets='←', infty='∞', sum='∑', prod='∏', int='∫', partial='∂',
    nabla='∇', top='⊤', otimes='⊗', odot='⊙', oplus='⊕', circledast='⊛', ast='∗', star='⋆', circ='∘',
    dots='…', ldots='…', cdots='⋯', lVert='‖', rVert='‖', Vert='‖', lvert='|', rvert='|', vert='|', mid='|',
    lceil='⌈', rceil='⌉', lfloor='⌊', rfloor='⌋', langle='⟨', rangle='⟩', ell='ℓ', forall='∀', exists='∃',
    cup='∪', cap='∩', subset='⊂', subseteq='⊆', setminus='∖', prime='′', emptyset='∅', colon=':',
    quad='\u2003', qquad='\u2003\u2003')
_SYM['lambda'] = _SYM.pop('lambda_'); _SYM.update({'in': '∈', 'notin': '∉', 'not': '¬'})
_REL = {'in', 'notin', 'le', 'leq', 'ge', 'geq', 'approx', 'ne', 'neq', 'equiv', 'sim', 'propto', 'to', 'mapsto',
        'leftarrow', 'rightarrow', 'Rightarrow', 'gets', 'subset', 'subseteq'}
_FUNCS = {'log', 'exp', 'max', 'min', 'sin', 'cos', 'tan', 'arg', 'det', 'lim', 'sup', 'inf', 'argmax', 'argmin'}
_DROP = {'big', 'Big', 'bigg', 'Bigg', 'bigl', 'bigr', 'Bigl', 'Bigr', 'left', 'right', 'textstyle', 'displaystyle',
         'limits', 'nolimits'}
_BB = dict(R='ℝ', N='ℕ', Z='ℤ', Q='ℚ', C='ℂ', E='𝔼', P='ℙ')
_CAL_HOLES = dict(B='ℬ', E='ℰ', F='ℱ', H='ℋ', I='ℐ', L='ℒ', M='ℳ', R='ℛ')
def _cal(s): return ''.join(_CAL_HOLES.get(c) or (chr(0x1D49C + ord(c) - 65) if 'A' <= c <= 'Z' else c) for c in s)

def _up(s): return f'\x01{s}\x02'                     # upright text (function names, \mathrm): not italicised

def tex2html(tex):
    """Typeset simple TeX as HTML (Unicode symbols, <sub>/<sup>, italic variables). Returns None when
    something is left that this small converter does not know (then the page shows the TeX itself)."""
    s = html.escape(tex.strip(), quote=False)
    s = s.replace(r'\{', '\x03').replace(r'\}', '\x04').replace(r'\%', '%').replace(r'\_', '_').replace(r'\#', '#')
    s = re.sub(r'\\[,:;>]', '\u2009', s); s = re.sub(r'\\!', '', s); s = re.sub(r'\\ ', ' ', s)
    s = re.sub(r'\\operatorname\*?\{([A-Za-z]+)\}', lambda m: _up(m.group(1)), s)
    def sym(m):
        w = m.group(1)
        if w in _SYM: return f' {_SYM[w]} ' if w in _REL else _SYM[w]
        if w in _FUNCS: return _up(w) + ' '
        if w == 'bmod': return ' ' + _up('mod') + ' '
        if w in _DROP: return ''
        return m.group(0)
    s = re.sub(r'\\([A-Za-z]+)(?![A-Za-z])\s?', sym, s)
    s = re.sub(r' {2,}', ' ', s)
    acc = {'hat': '\u0302', 'tilde': '\u0303', 'bar': '\u0305', 'overline': '\u0305', 'vec': '\u20d7', 'dot': '\u0307'}
    def accent(m):
        mark, body = acc[m.group(1)], m.group(2)
        if len(body) <= 2 and '<' not in body and '\x01' not in body: return ''.join(c + mark for c in body)
        return f'<span class="ol">{body}</span>' if m.group(1) in ('bar', 'overline') else None
    for _ in range(20):
        before = s
        s = re.sub(r'\\(hat|tilde|bar|overline|vec|dot)\s*\{([^{}]*)\}', lambda m: accent(m) or m.group(0), s)
        s = re.sub(r'\\(hat|tilde|bar|vec|dot)\s*([A-Za-z0-9]|[^\x00-\x7f])', lambda m: accent(m) or m.group(0), s)
        s = re.sub(r'\\(?:mathrm|text|textrm|mathrm|operatorname)\{([^{}]*)\}', lambda m: _up(m.group(1)), s)
        s = re.sub(r'\\(?:mathit)\{([^{}]*)\}', r'\1', s)
        s = re.sub(r'\\(?:mathbf|boldsymbol|bm)\{([^{}]*)\}', r'<b>\1</b>', s)
        s = re.sub(r'\\(?:mathbf|boldsymbol|bm)\s*([A-Za-z]|[^\x00-\x7f])', r'<b>\1</b>', s)
        s = re.sub(r'\\mathbb\s*\{?([A-Z])\}?', lambda m: _BB.get(m.group(1), f'<b>{m.group(1)}</b>'), s)
        s = re.sub(r'\\mathcal\{([A-Za-z]+)\}', lambda m: _cal(m.group(1)), s)
        s = re.sub(r'\\mathcal\s*([A-Z])', lambda m: _cal(m.group(1)), s)
        def frac(m):
            a, b = m.group(1), m.group(2)
            txt = lambda x: re.sub(r'<[^>]+>|[\x01\x02]', '', x)
            num = f'({a})' if re.search(r'[\s+\-−·×]', txt(a)) else a
            den = b if len(txt(b)) <= 1 or txt(b).isdigit() else f'({b})'
            return f'{num}/{den}'
        s = re.sub(r'\\[tdc]?frac\{([^{}]*)\}\{([^{}]*)\}', frac, s)
        s = re.sub(r'\\[tdc]?frac\s*([A-Za-z0-9])\s*([A-Za-z0-9])', r'\1/\2', s)
        s = re.sub(r'\\sqrt\{([^{}]*)\}', lambda m: '√' + (m.group(1) if len(re.sub('<[^>]+>|[\x01\x02]', '', m.group(1))) == 1 else f'({m.group(1)})'), s)
        s = re.sub(r'\\sqrt\s*([A-Za-z0-9])', r'√\1', s)
        s = re.sub(r'_\{([^{}]*)\}', r'<sub>\1</sub>', s)
        s = re.sub(r'\^\{([^{}]*)\}', r'<sup>\1</sup>', s)
        s = re.sub(r'(?<![\\A-Za-z}])\{([^{}]*)\}', r'\1', s)
        if s == before: break
    s = re.sub(r'_([A-Za-z0-9*′]|[^\x00-\x7f\x01-\x04])', r'<sub>\1</sub>', s)
    s = re.sub(r"\^([A-Za-z0-9*′'+\-]|[^\x00-\x7f\x01-\x04])", r'<sup>\1</sup>', s)
    if re.search(r'[\\{}^_]', s) or '&amp;' in s: return None
    s = s.replace('\x03', '{').replace('\x04', '}')
    parts = re.split(r'(<[^>]+>|&\w+;|\x01[^\x02]*\x02)', s)
    out = []
    for p in parts:
        if p.startswith('\x01'): out.append(f'<span class="up">{p[1:-1]}</span>')
        elif p.startswith(('<', '&')): out.append(p)
        else: out.append(re.sub(r'(?:[A-Za-z][\u0300-\u036f\u20d7]*)+', lambda m: f'<i>{m.group(0)}</i>', p.replace('-', '−')))
    return ''.join(out)

# ---------------------------------------------------------------- offline builder: widgets
def _widget_html(mid, state, depth=0):
    "Static HTML for a saved widget (disabled controls, Output widgets' saved outputs)."
    m = state.get(mid)
    if m is None or depth > 20: return None
    st, name = m.get('state', {}), m.get('model_name', '')
    desc = html.escape(str(st.get('description', '') or ''))
    lab = f'<span class="w-desc">{desc}</span> ' if desc else ''
    kids = lambda: [_widget_html(c[len('IPY_MODEL_'):], state, depth + 1) or '' for c in st.get('children', [])]
    if name in ('VBoxModel', 'BoxModel', 'GridBoxModel', 'AccordionModel', 'TabModel', 'StackModel'):
        return '<div class="w-vbox">' + ''.join(kids()) + '</div>'
    if name == 'HBoxModel': return '<div class="w-hbox">' + ''.join(kids()) + '</div>'
    if name in ('HTMLModel', 'HTMLMathModel'): return f'<span class="w-html">{lab}{st.get("value", "")}</span>'
    if name == 'LabelModel': return f'<span class="w-label">{html.escape(str(st.get("value", "")))}</span>'
    if name in ('FloatProgressModel', 'IntProgressModel'):
        return f'{lab}<progress value="{st.get("value", 0)}" max="{st.get("max", 100)}"></progress>'
    if 'Slider' in name:
        v = st.get('value'); v = v if not isinstance(v, list) else '–'.join(map(str, v))
        return (f'<span class="w-ctl">{lab}<input type="range" disabled min="{st.get("min", 0)}" max="{st.get("max", 100)}"'
                f' step="{st.get("step", 1)}" value="{v if not isinstance(v, str) else 0}"> <code>{html.escape(str(v))}</code></span>')
    if name in ('ToggleButtonsModel', 'DropdownModel', 'RadioButtonsModel', 'SelectModel', 'SelectionSliderModel'):
        opts, i = st.get('_options_labels', []), st.get('index')
        bs = ''.join(f'<span class="w-opt{" on" if j == i else ""}">{html.escape(str(o))}</span>' for j, o in enumerate(opts))
        return f'<span class="w-ctl">{lab}{bs}</span>'
    if name in ('CheckboxModel', 'ToggleButtonModel'):
        return f'<span class="w-ctl"><input type="checkbox" disabled{" checked" if st.get("value") else ""}> {desc}</span>'
    if name == 'ButtonModel': return f'<span class="w-opt">{desc}</span>'
    if name in ('TextModel', 'IntTextModel', 'FloatTextModel', 'BoundedIntTextModel', 'BoundedFloatTextModel', 'TextareaModel'):
        return f'<span class="w-ctl">{lab}<code>{html.escape(str(st.get("value", "")))}</code></span>'
    if name == 'OutputModel': return '<div class="w-output">' + ''.join(_output_html(o) for o in st.get('outputs', [])) + '</div>'
    if name == 'ImageModel': return None
    return f'<span class="w-ctl">{lab}</span>' if lab else ''

def _has_controls(mid, state, depth=0):
    m = state.get(mid, {}); name = m.get('model_name', '')
    if re.search(r'Slider|Toggle|Dropdown|Radio|Select|Checkbox|Button|Text', name): return True
    return depth < 20 and any(_has_controls(c[len('IPY_MODEL_'):], state, depth + 1) for c in m.get('state', {}).get('children', []))

def _output_html(o):
    from nbconvert.filters.markdown import markdown2html
    if o.get('output_type') == 'stream': return f'<pre>{html.escape("".join(o.get("text", "")))}</pre>'
    d = o.get('data', {})
    j = lambda v: ''.join(v) if isinstance(v, list) else v
    if 'image/png' in d: return f'<img src="data:image/png;base64,{j(d["image/png"]).strip()}">'
    if 'image/svg+xml' in d: return j(d['image/svg+xml'])
    if 'text/html' in d: return j(d['text/html'])
    if 'text/markdown' in d: return markdown2html(j(d['text/markdown']))
    if 'text/plain' in d: return f'<pre>{html.escape(j(d["text/plain"]))}</pre>'
    return ''

WIDGET = 'application/vnd.jupyter.widget-view+json'

def static_widgets(nb):
    "Replace widget views by static HTML from the saved widget state; drop the state (no widget scripts)."
    state = (nb.metadata.get('widgets', {}).get('application/vnd.jupyter.widget-state+json', {}) or {}).get('state', {})
    for c in nb.cells:
        for o in c.get('outputs', []):
            d = o.get('data', {})
            if WIDGET not in d: continue
            mid = d[WIDGET].get('model_id')
            body = _widget_html(mid, state) if mid else None
            if body is None:
                txt = html.escape(''.join(d.get('text/plain', '')))
                body = (f'<details class="w-missing"><summary>interactive widget (its state was not saved; run the '
                        f'notebook in Jupyter to use it)</summary><pre>{txt}</pre></details>')
            elif _has_controls(mid, state):
                body = ('<div class="widget-static"><div class="w-note">Interactive in Jupyter; shown here as saved.'
                        f'</div>{body}</div>')
            else: body = f'<div class="widget-static plain">{body}</div>'
            o['data'] = {'text/html': body}
    nb.metadata.pop('widgets', None)

# ---------------------------------------------------------------- offline builder: pages
_QDIR = re.compile(r'^#\|\s*([\w-]+)\s*:\s*(.*?)\s*$')

def quarto_directives(cell):
    "Remove the leading `#| key: value` lines nbdev leaves for Quarto; return them as a dict."
    lines, opts = cell.source.splitlines(), {}
    while lines and (m := _QDIR.match(lines[0])):
        opts[m.group(1)] = m.group(2).strip('"\''); lines.pop(0)
    while lines and lines[0].startswith('#|'): lines.pop(0)
    cell.source = '\n'.join(lines)
    return opts

def front_matter(nb):
    import yaml
    if nb.cells and nb.cells[0].cell_type == 'raw' and nb.cells[0].source.lstrip().startswith('---'):
        fm = yaml.safe_load(nb.cells[0].source.strip().strip('-')) or {}
        nb.cells.pop(0)
        return fm
    return {}

def _pandoc_id(text):
    "The identifier pandoc (and so Quarto) gives a heading."
    s = re.sub(r'[^\w\s.-]', '', text.strip(), flags=re.UNICODE).lower()
    s = re.sub(r'\s+', '-', s)
    s = re.sub(r'^[^a-z]+', '', s)
    return s or 'section'

def _exporter():
    from nbconvert import HTMLExporter
    from nbconvert.filters.markdown_mistune import IPythonRenderer, MarkdownWithMath
    from traitlets.config import Config
    from jinja2 import pass_context
    class Renderer(IPythonRenderer):
        def inline_math(self, body): return f'<span class="math inline" data-tex="{html.escape(body)}"></span>'
        def block_math(self, body): return f'<div class="math display" data-tex="{html.escape(body)}"></div>'
        def latex_environment(self, name, body):
            t = f'\\begin{{{name}}}{body}\\end{{{name}}}'
            return f'<div class="math display" data-tex="{html.escape(t)}"></div>'
    class Exporter(HTMLExporter):
        @pass_context
        def markdown2html(self, context, source):
            cell = context.get('cell', {})
            r = Renderer(escape=False, attachments=cell.get('attachments', {}), embed_images=self.embed_images,
                         path=context.get('resources', {}).get('metadata', {}).get('path', ''),
                         anchor_link_text=self.anchor_link_text, exclude_anchor_links=self.exclude_anchor_links)
            return MarkdownWithMath(renderer=r).render(source)
    c = Config()
    c.TagRemovePreprocessor.enabled = True
    c.TagRemovePreprocessor.remove_cell_tags = {'docs_remove_cell'}
    c.TagRemovePreprocessor.remove_input_tags = {'docs_remove_input'}
    c.TagRemovePreprocessor.remove_all_outputs_tags = {'docs_remove_output'}
    return Exporter(config=c, template_name='basic', embed_images=True, exclude_input_prompt=True,
                    exclude_output_prompt=True, anchor_link_text='#')

def _nbdev_html_name(name):
    "nbdev's page name for a notebook (`00_keypoints` -> `keypoints.html`): used in its symbol links."
    return re.sub(r'^\d+[a-zA-Z0-9]*_', '', name) + '.html' if re.match(r'^\d+[a-zA-Z0-9]*_', name) else name + '.html'

def convert(proc_nb, ctx):
    "One processed notebook -> (front matter, body HTML, [(level, id, text)] for the page's table of contents)."
    import nbformat
    from bs4 import BeautifulSoup, NavigableString
    nb = nbformat.read(proc_nb, as_version=4)
    fm = front_matter(nb)
    for c in nb.cells:
        c.metadata.setdefault('tags', [])
        if c.cell_type != 'code': continue
        o = quarto_directives(c)
        t = c.metadata.tags
        if o.get('include') == 'false': t.append('docs_remove_cell')
        if o.get('echo') == 'false' or not c.source.strip(): t.append('docs_remove_input')
        if o.get('output') == 'false': t.append('docs_remove_output')
        if o.get('code-fold') in ('true', 'show'):
            t.append('docs_fold_' + ('open' if o['code-fold'] == 'show' else 'closed'))
            c.metadata['docs_summary'] = o.get('code-summary', 'Code')
    nb.cells = [c for c in nb.cells if not (c.cell_type == 'markdown' and c.source.strip().startswith('<!-- WARNING'))]
    static_widgets(nb)
    body, _ = ctx['exporter'].from_notebook_node(nb, resources={'metadata': {'path': str(ctx.get('nbs', '.'))}})
    soup = BeautifulSoup(body, 'html.parser')
    # folded code ("Exported source")
    for cls, is_open in (('celltag_docs_fold_open', True), ('celltag_docs_fold_closed', False)):
        for cell in soup.select('div.' + cls):
            inp = cell.find('div', class_='input')
            if inp is None: continue
            det = soup.new_tag('details', attrs={'class': 'code-fold'}); det['open'] = '' if is_open else None
            if not is_open: del det['open']
            summ = soup.new_tag('summary'); summ.string = 'Exported source'; det.append(summ)
            inp.wrap(det)
    # maths
    for el in soup.select('.math[data-tex]'):
        tex = el['data-tex']; disp = 'display' in el.get('class', [])
        h = tex2html(tex)
        if h is None:
            el['class'] = el.get('class', []) + ['tex']
            el.string = (f'$${tex}$$' if disp else f'${tex}$')
        else:
            el.clear(); el.append(BeautifulSoup(h, 'html.parser')); el['title'] = tex
        del el['data-tex']
    # heading ids as pandoc/Quarto writes them (links written for the Quarto site work here too)
    toc, used = [], set(x['id'] for x in soup.select('[id]'))
    for hd in soup.find_all(['h1', 'h2', 'h3', 'h4', 'h5', 'h6']):
        for a in hd.select('a.anchor-link'): a.extract()
        text = hd.get_text(' ', strip=True)
        base = _pandoc_id(text); hid, k = base, 0
        while hid in used and hid != hd.get('id'): k += 1; hid = f'{base}-{k}'
        old = hd.get('id')
        if old and old != hid:
            keep = soup.new_tag('span', attrs={'id': old}); hd.insert(0, keep)
        hd['id'] = hid; used.add(hid)
        a = soup.new_tag('a', attrs={'class': 'anchor-link', 'href': '#' + hid}); a.string = '#'; hd.append(a)
        if hd.name in ('h2', 'h3'): toc.append((int(hd.name[1]), hid, text))
    # links: notebooks -> pages, this site's absolute symbol links (nbdev) -> relative
    site = ctx['site_url'].rstrip('/') + '/'
    for a in soup.find_all('a', href=True):
        href = a['href']
        if href.startswith(site):
            rest = href[len(site):]; page, _, frag = rest.partition('#')
            if page in ctx['nbdev_pages']:
                a['href'] = ctx['nbdev_pages'][page] + ('#' + frag if frag else '')
                a['data-sym'] = '1'                     # a symbol link of nbdev's: its anchor is checked later
            continue
        if re.match(r'^[a-z][a-z0-9+.-]*:|^#|^/', href): continue
        path, _, frag = href.partition('#')
        if path.endswith('.ipynb'): a['href'] = path[:-6] + '.html' + ('#' + frag if frag else '')
    for a in soup.find_all('a'):                        # Quarto link attributes: [text](url){target="_blank" ...}
        nxt = a.next_sibling
        if isinstance(nxt, NavigableString) and (m := re.match(r'\{([^{}]*)\}', str(nxt))):
            for k, v in re.findall(r'([\w-]+)="([^"]*)"', m.group(1)): a[k] = v
            cls = re.findall(r'(?:^|\s)\.([\w-]+)', m.group(1))
            if cls: a['class'] = a.get('class', []) + cls
            nxt.replace_with(str(nxt)[m.end():])
    for t in soup.find_all('table'): t['class'] = t.get('class', []) + ['table']
    return fm, str(soup), toc

_CSS = """
:root { --side: 17rem; --fg: #1f2328; --muted: #656d76; --accent: #1f6feb; --line: #d8dee4; --code: #f6f8fa; }
* { box-sizing: border-box; }
html { scroll-padding-top: 1rem; }
body { margin: 0; color: var(--fg); background: #fff;
  font: 16px/1.6 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", "Helvetica Neue", Arial, sans-serif; }
a { color: var(--accent); text-decoration: none; } a:hover { text-decoration: underline; }
nav.site-side { position: fixed; top: 0; bottom: 0; left: 0; width: var(--side); overflow-y: auto;
  padding: 1.2rem 1rem 2rem; background: #f8f9fa; border-right: 1px solid var(--line); font-size: .92rem; }
nav.site-side .brand { display: block; font-weight: 700; font-size: 1.2rem; color: var(--fg); margin-bottom: .2rem; }
nav.site-side .tagline { color: var(--muted); font-size: .82rem; line-height: 1.35; margin-bottom: .6rem; }
nav.site-side .sec { margin: 1rem 0 .25rem; font-weight: 650; font-size: .78rem; letter-spacing: .04em;
  text-transform: uppercase; color: var(--muted); }
nav.site-side ul { list-style: none; margin: 0; padding: 0; }
nav.site-side li a { display: block; padding: .18rem .55rem; border-radius: .35rem; color: #30363d; line-height: 1.35; }
nav.site-side li a:hover { background: #eaeef2; text-decoration: none; }
nav.site-side li a.active { background: #ddf4ff; color: #0550ae; font-weight: 600; }
main.site-main { margin-left: var(--side); padding: 1.6rem 2.6rem 3rem; max-width: 62rem; }
aside.page-toc { display: none; }
@media (min-width: 1560px) {
  aside.page-toc { display: block; position: fixed; top: 1.6rem; left: calc(var(--side) + 63rem); width: 13rem;
    max-height: 90vh; overflow-y: auto; font-size: .82rem; border-left: 1px solid var(--line); padding-left: .9rem; }
  aside.page-toc .ttl { font-weight: 650; color: var(--muted); margin-bottom: .3rem; }
  aside.page-toc ul { list-style: none; margin: 0; padding: 0; } aside.page-toc li { margin: .15rem 0; }
  aside.page-toc li.l3 { padding-left: .8rem; } aside.page-toc a { color: #30363d; }
}
@media (max-width: 900px) {
  nav.site-side { position: static; width: auto; border-right: 0; border-bottom: 1px solid var(--line); }
  main.site-main { margin-left: 0; padding: 1rem; }
}
h1.title { font-size: 2.1rem; line-height: 1.25; margin: .2rem 0 .4rem; }
div.description { margin-bottom: 1.4rem; }
h2 { margin-top: 2.2rem; padding-bottom: .25rem; border-bottom: 1px solid var(--line); font-size: 1.55rem; }
h3 { margin-top: 1.6rem; font-size: 1.22rem; } h4 { font-size: 1.05rem; }
h1 a.anchor-link, h2 a.anchor-link, h3 a.anchor-link, h4 a.anchor-link { visibility: hidden; margin-left: .4rem;
  color: var(--muted); font-weight: 400; }
h1:hover a.anchor-link, h2:hover a.anchor-link, h3:hover a.anchor-link, h4:hover a.anchor-link { visibility: visible; }
.cell { margin: .6rem 0 1rem; }
code { font-family: ui-monospace, SFMono-Regular, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: .86em;
  background: rgba(175, 184, 193, .2); padding: .1em .3em; border-radius: .3rem; }
pre code, .highlight code { background: none; padding: 0; }
pre { font-family: ui-monospace, SFMono-Regular, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: .82rem;
  line-height: 1.45; overflow-x: auto; }
.input_area { background: var(--code); border: 1px solid #e5e9ed; border-radius: .4rem; }
.input_area .highlight pre, .input_area pre { margin: 0; padding: .65rem .85rem; }
details.code-fold > summary { cursor: pointer; color: var(--muted); font-size: .85rem; margin-bottom: .25rem; }
.output_area { margin-top: .35rem; }
.output_area pre, .w-output pre { margin: 0 0 0 .8rem; padding: .15rem .7rem; border-left: 2px solid lightsalmon; }
.output_stderr pre { background: #fff5f5; border-left-color: #d1242f; }
.output_error pre { background: #ffebe9; border-left-color: #d1242f; }
.output_png img, .output_jpeg img, .w-output img, .rendered_html img { max-width: 100%; height: auto; }
.output_svg svg { max-width: 100%; height: auto; }
.output_html { overflow-x: auto; }
.output_markdown > hr:first-child { display: none; }
.output_markdown h3, .output_markdown h4 { font-family: ui-monospace, SFMono-Regular, "DejaVu Sans Mono", monospace;
  font-size: 1.08rem; margin-top: 1.4rem; }
.output_markdown blockquote { margin: .4rem 0; padding: 0; border: 0; }
.output_markdown blockquote pre { background: var(--code); border: 1px solid #e5e9ed; border-radius: .4rem;
  padding: .5rem .8rem; margin: 0; white-space: pre-wrap; }
blockquote { margin: 1rem 0; padding: .2rem 1rem; border-left: 3px solid var(--line); color: #444c56; }
table.table { border-collapse: collapse; margin: .8rem 0; font-size: .9rem; display: block; overflow-x: auto; }
table.table th, table.table td { border: 1px solid var(--line); padding: .3rem .6rem; text-align: left; vertical-align: top; }
table.table thead th { background: #f6f8fa; }
.math { font-family: "STIX Two Math", "Latin Modern Math", "Cambria Math", "DejaVu Serif", "Times New Roman", serif; }
.math i { font-style: italic; } .math .ol { text-decoration: overline; } .math .up { font-style: normal; } .math sub, .math sup { font-size: .72em; }
span.math { white-space: nowrap; }
div.math.display { text-align: center; margin: .9rem 0; font-size: 1.08em; overflow-x: auto; }
.math.tex { font-family: ui-monospace, SFMono-Regular, "DejaVu Sans Mono", monospace; font-size: .86em; color: #6639ba;
  background: #fbf8ff; border-radius: .25rem; padding: 0 .2em; white-space: pre-wrap; }
div.math.tex { text-align: left; padding: .5rem .8rem; }
.widget-static { border: 1px dashed #c6ccd2; border-radius: .4rem; padding: .5rem .7rem; margin: .3rem 0; }
.widget-static.plain { border: 0; padding: 0; }
.w-note { font-size: .78rem; color: var(--muted); margin-bottom: .3rem; }
.w-vbox { display: flex; flex-direction: column; gap: .3rem; } .w-hbox { display: flex; gap: .5rem; align-items: center; flex-wrap: wrap; }
.w-ctl { display: inline-flex; gap: .4rem; align-items: center; font-size: .88rem; }
.w-opt { display: inline-block; padding: .05rem .55rem; border: 1px solid #c6ccd2; border-radius: .3rem; font-size: .85rem; color: #57606a; }
.w-opt.on { background: #ddf4ff; border-color: #54aeff; color: #0550ae; }
footer.pager { display: flex; justify-content: space-between; gap: 1rem; margin-top: 3rem; padding-top: 1rem;
  border-top: 1px solid var(--line); }
footer.pager a { display: block; max-width: 48%; } footer.pager .lbl { display: block; font-size: .78rem; color: var(--muted); }
footer.pager .next { text-align: right; margin-left: auto; }
"""

def _css():
    from pygments.formatters import HtmlFormatter
    return _CSS + HtmlFormatter(style='default').get_style_defs('.highlight') + '\n.highlight { background: none; }\n'

def _inline_md(s):
    "Markdown of a title/description line -> inline HTML."
    from nbconvert.filters.markdown import markdown2html
    h = markdown2html(str(s)).strip()
    return re.sub(r'^<p>(.*)</p>$', r'\1', h, flags=re.S)

def page(title, desc, body, toc, nav, prev, nxt, ctx):
    e = html.escape
    side = [f'<a class="brand" href="index.html">{e(ctx["title"])}</a>',
            f'<div class="tagline">{e(ctx["description"])}</div>']
    for sec, items in nav:
        if sec: side.append(f'<div class="sec">{e(sec)}</div>')
        act = ' class="active"'
        side.append('<ul>' + ''.join(f'<li><a href="{e(h)}"{act if cur else ""}>{t}</a></li>' for h, t, cur in items) + '</ul>')
    toc_html = ''
    if toc:
        toc_html = ('<aside class="page-toc"><div class="ttl">On this page</div><ul>' +
                    ''.join(f'<li class="l{l}"><a href="#{e(i)}">{e(t)}</a></li>' for l, i, t in toc) + '</ul></aside>')
    pager = '<footer class="pager">'
    if prev: pager += f'<a class="prev" href="{e(prev[0])}"><span class="lbl">&larr; Previous</span>{prev[1]}</a>'
    if nxt: pager += f'<a class="next" href="{e(nxt[0])}"><span class="lbl">Next &rarr;</span>{nxt[1]}</a>'
    pager += '</footer>'
    plain_title = re.sub(r'<[^>]+>', '', title)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{plain_title} – {e(ctx['title'])}</title>
<link rel="stylesheet" href="site.css">
<link rel="stylesheet" href="styles.css">
</head>
<body>
<nav class="site-side">{''.join(side)}</nav>
<main class="site-main">
<header><h1 class="title">{title}</h1>{f'<div class="description">{desc}</div>' if desc else ''}</header>
{body}
{pager}
</main>
{toc_html}
</body>
</html>
"""

def _title_of(src):
    "Title of a notebook from its first markdown heading (for sidebar entries of pages not rebuilt now)."
    try:
        for c in json.loads(src.read_text())['cells']:
            if c['cell_type'] == 'markdown':
                m = re.search(r'^#\s+(.+?)\s*$', ''.join(c['source']), re.M)
                if m: return m.group(1)
    except Exception: pass
    return src.stem

_SYM_LINK = re.compile(r'<a [^>]*\bdata-sym="1"[^>]*>')

def _fix_symbol_anchors(converted):
    """nbdev links every documented name, methods included (`Foo.bar` -> `foo.html#foo.bar`), but a name has a
    heading only when the page shows its show_doc. Point such links at the closest heading that exists (the
    class for a method), else at the page."""
    ids = {n: set(re.findall(r'\bid="([^"]+)"', body)) for n, (_, body, _) in converted.items()}
    def fix(m):
        tag = m.group(0)
        h = re.search(r'href="([^"#]+)\.html#([^"]+)"', tag)
        if not h or h.group(1) not in ids: return tag
        page, frag = h.group(1), h.group(2)
        if frag in ids[page]: return tag
        while '.' in frag and frag not in ids[page]: frag = frag.rsplit('.', 1)[0]
        tail = f'#{frag}' if frag in ids[page] else ''
        return tag.replace(h.group(0), f'href="{page}.html{tail}"')
    for n, (fm, body, toc) in list(converted.items()):
        converted[n] = (fm, _SYM_LINK.sub(fix, body), toc)

def build_offline(nbs, pages, only, out, proc, force, keep_going=False):
    names = [n for _, n in pages if not only or n in only]
    failed = process(nbs, names, proc, force, keep_going)
    names = [n for n in names if n not in failed]
    s = settings()
    ctx = dict(title=s.get('title', 'docs'), description=s.get('description', ''), exporter=_exporter(), nbs=nbs,
               site_url=s.get('doc_host', '') + s.get('doc_baseurl', ''),
               nbdev_pages={_nbdev_html_name(n): f'{n}.html' for _, n in pages})
    out.mkdir(parents=True, exist_ok=True)
    converted, t_all = {}, time.time()
    for n in names:
        t0 = time.time()
        fm, body, toc = convert(proc / f'{n}.ipynb', ctx)
        converted[n] = (fm, body, toc)
        log(f'  page {n}.html ({time.time() - t0:.1f}s)')
    _fix_symbol_anchors(converted)
    titles = {n: _inline_md(converted[n][0].get('title', n) if n in converted else _title_of(nbs / f'{n}.ipynb'))
              for _, n in pages}
    order = [n for _, n in pages]
    for n in names:
        fm, body, toc = converted[n]
        nav, cur = [], None
        for sec, m in pages:
            if cur is None or sec != cur[0]: cur = (sec, []); nav.append(cur)
            cur[1].append((f'{m}.html', titles[m], m == n))
        i = order.index(n)
        prev = (f'{order[i-1]}.html', titles[order[i-1]]) if i > 0 else None
        nxt = (f'{order[i+1]}.html', titles[order[i+1]]) if i + 1 < len(order) else None
        desc = _inline_md(fm['description']) if fm.get('description') else ''
        (out / f'{n}.html').write_text(page(titles[n], desc, body, toc, nav, prev, nxt, ctx), encoding='utf-8')
    (out / 'site.css').write_text(_css())
    if (nbs / 'styles.css').exists(): shutil.copy2(nbs / 'styles.css', out / 'styles.css')
    else: (out / 'styles.css').write_text('')
    (out / '.nojekyll').write_text('')
    log(f'wrote {len(names)} page(s) in {time.time() - t_all:.0f}s')
    if failed: raise DocsError(f'processing failed for {", ".join(f + ".ipynb" for f in failed)} (messages above); '
                               'their pages were not written')

# ---------------------------------------------------------------- main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--only', nargs='+', help='notebook names (e.g. 00_keypoints index), comma or space separated')
    ap.add_argument('--offline', action='store_true', help='the offline builder even when quarto is installed '
                    '(also: POSEDISTILL_DOCS_OFFLINE=1)')
    ap.add_argument('--nbs', default=str(ROOT / 'nbs'), help='notebooks folder')
    ap.add_argument('--out', default=None, help='site folder (default: doc_path of settings.ini, _docs)')
    ap.add_argument('--proc', default=str(ROOT / '_proc'), help='processed notebooks (cache)')
    ap.add_argument('--force', action='store_true', help='process every notebook again')
    ap.add_argument('--keep-going', action='store_true', help='offline builder: build the other pages when a '
                    'notebook fails, then fail at the end')
    ap.add_argument('--worker', nargs='+', help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker: return _worker(a.worker[0], a.worker[1:], a.keep_going)
    nbs = Path(a.nbs).resolve()
    out = Path(a.out).resolve() if a.out else ROOT / settings().get('doc_path', '_docs')
    only = [Path(x).stem for o in (a.only or []) for x in o.replace(',', ' ').split()] or None
    t0 = time.time()
    try:
        pages = plan(nbs, only)
        offline = a.offline or os.environ.get('POSEDISTILL_DOCS_OFFLINE') or not shutil.which('quarto')
        log(f'docs: {"offline HTML builder" if offline else "Quarto (" + shutil.which("quarto") + ")"}, '
            f'{len(only) if only else len(pages)} notebook(s) -> {out}')
        (build_offline if offline else build_quarto)(nbs, pages, set(only or []), out, Path(a.proc).resolve(), a.force,
                                                          a.keep_going)
    except DocsError as e:
        print(f'docs: {e}', file=sys.stderr); return 1
    log(f'docs: done in {time.time() - t0:.0f}s; open {out / "index.html"}')
    return 0

if __name__ == '__main__': sys.exit(main())
