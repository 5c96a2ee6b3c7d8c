"""Write README.md from nbs/index.ipynb (nbdev_readme needs Quarto, which these machines cannot install)."""
import json
from pathlib import Path

def main(src='nbs/index.ipynb', dst='README.md'):
    nb = json.loads(Path(src).read_text())
    out = []
    for c in nb['cells']:
        s = ''.join(c['source'])
        if c['cell_type'] == 'markdown':
            lines = [l[2:] if l.startswith('> ') and i == 0 else l for i, l in enumerate(s.splitlines())]
            out.append(s)
        elif c['cell_type'] == 'code':
            if s.lstrip().startswith('#| hide') or '#| default_exp' in s: continue
            out.append('```python\n' + '\n'.join(l for l in s.splitlines() if not l.startswith('#|')) + '\n```')
            for o in c.get('outputs', []):
                txt = ''.join(o.get('text', '')) or ''.join(o.get('data', {}).get('text/plain', ''))
                if txt.strip() and 'image/png' not in o.get('data', {}): out.append('```\n' + txt.rstrip() + '\n```')
    Path(dst).write_text('<!-- generated from nbs/index.ipynb by tools/readme.py: do not edit -->\n\n' + '\n\n'.join(out) + '\n')

if __name__ == '__main__': main()
