"""Write README.md from nbs/index.ipynb (nbdev_readme needs Quarto, which these machines cannot install)."""
import base64, json, re
from pathlib import Path

def main(src='nbs/index.ipynb', dst='README.md'):
    nb = json.loads(Path(src).read_text())
    out, n_img = [], 0
    img_dir = Path(dst).parent / 'images'
    for old in img_dir.glob('readme-*.png'): old.unlink()
    for c in nb['cells']:
        s = ''.join(c['source'])
        if c['cell_type'] == 'markdown':
            lines = [l[2:] if l.startswith('> ') and i == 0 else l for i, l in enumerate(s.splitlines())]
            out.append(re.sub(r'\]\((?!https?:|#|/)([^)]+\.ipynb)', r'](nbs/\1', s))   # lesson links from the repo root
        elif c['cell_type'] == 'code':
            if s.lstrip().startswith('#| hide') or '#| default_exp' in s: continue
            out.append('```python\n' + '\n'.join(l for l in s.splitlines() if not l.startswith('#|')) + '\n```')
            for o in c.get('outputs', []):
                txt = ''.join(o.get('text', '')) or ''.join(o.get('data', {}).get('text/plain', ''))
                png = o.get('data', {}).get('image/png')
                if png:                                    # figures go beside the README, linked
                    n_img += 1; img_dir.mkdir(exist_ok=True)
                    (img_dir / f'readme-{n_img}.png').write_bytes(base64.b64decode(''.join(png)))
                    out.append(f'![figure {n_img}](images/readme-{n_img}.png)')
                elif txt.strip(): out.append('```\n' + txt.rstrip() + '\n```')
    Path(dst).write_text('<!-- generated from nbs/index.ipynb by tools/readme.py: do not edit -->\n\n' + '\n\n'.join(out) + '\n')

if __name__ == '__main__': main()
