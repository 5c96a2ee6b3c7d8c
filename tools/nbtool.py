"""Developer helper for authoring the lesson notebooks (not part of the library).

    python tools/nbtool.py py2nb SRC.py nbs/NAME.ipynb   # percent-format script -> notebook (no outputs)
    python tools/nbtool.py nb2py nbs/NAME.ipynb SRC.py   # notebook -> percent-format script, to edit
    python tools/nbtool.py run nbs/NAME.ipynb [...]      # execute in place (cwd nbs/), save outputs + widget state

Percent format: a line `# %%` starts a code cell, `# %% [markdown]` a markdown cell whose lines
are written as `# text` comments. The notebook is the source of truth; the script is scratch.
"""
import sys, json, os, time, secrets
from pathlib import Path

def _cell(kind, lines):
    while lines and not lines[-1].strip(): lines.pop()
    while lines and not lines[0].strip(): lines.pop(0)
    if kind == 'markdown':
        lines = [l[2:] if l.startswith('# ') else (l[1:] if l.startswith('#') else l) for l in lines]
    src = [l + '\n' for l in lines]
    if src: src[-1] = src[-1][:-1]
    c = {'cell_type': kind, 'id': secrets.token_hex(4), 'metadata': {}, 'source': src}   # ids: nbdev_export names cells by them
    if kind == 'code': c.update(execution_count=None, outputs=[])
    return c

def py2nb(src, dst):
    cells, kind, buf = [], None, []
    for line in Path(src).read_text().splitlines():
        if line.startswith('# %%'):
            if kind is not None: cells.append(_cell(kind, buf))
            kind, buf = ('markdown' if '[markdown]' in line else 'code'), []
        else: buf.append(line)
    if kind is not None: cells.append(_cell(kind, buf))
    nb = {'cells': cells, 'metadata': {'kernelspec': {'display_name': 'python3', 'language': 'python', 'name': 'python3'}},
          'nbformat': 4, 'nbformat_minor': 5}
    Path(dst).write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')

def nb2py(src, dst):
    nb = json.loads(Path(src).read_text())
    out = []
    for c in nb['cells']:
        s = ''.join(c['source'])
        if c['cell_type'] == 'markdown':
            out.append('# %% [markdown]\n' + '\n'.join(('# ' + l) if l else '#' for l in s.splitlines()))
        else: out.append('# %%\n' + s)
    Path(dst).write_text('\n\n'.join(out) + '\n')

def run(*paths):
    import nbformat
    from nbclient import NotebookClient
    for p in paths:
        p = Path(p).resolve(); t0 = time.time()
        nb = nbformat.read(p, as_version=4)
        skipped = {}                                   # `#| cuda` cells need a GPU: not run here, left without outputs
        for i, c in enumerate(nb.cells):
            if c.cell_type == 'code' and any(l.strip() in ('#| cuda', '#|cuda') for l in c.source.splitlines()[:3]):
                skipped[i] = c.source; c.source = '# (not executed here)'
        NotebookClient(nb, timeout=3600, kernel_name='python3', resources={'metadata': {'path': str(p.parent)}},
                       store_widget_state=True).execute()
        for i, src in skipped.items(): nb.cells[i].source, nb.cells[i].outputs, nb.cells[i].execution_count = src, [], None
        tmp = p.with_suffix('.ipynb.tmp'); nbformat.write(nb, tmp); os.replace(tmp, p)
        print(f'{p.name}: executed in {time.time()-t0:.0f}s')

if __name__ == '__main__':
    cmd, *args = sys.argv[1:]
    {'py2nb': py2nb, 'nb2py': nb2py, 'run': run}[cmd](*args)
