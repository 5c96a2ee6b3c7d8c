"Checks on the repository itself: README generated from index.ipynb, layout of the design card, lesson conventions."
import ast, re, subprocess, sys, tempfile
from pathlib import Path
import pytest

def test_readme_is_generated_from_index(root):
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / 'README.md'
        sys.path.insert(0, str(root / 'tools'))
        import readme
        readme.main(str(root / 'nbs/index.ipynb'), str(out))
        assert out.read_text() == (root / 'README.md').read_text(), 'README.md is stale: run `make readme`'

def test_design_card_layout(root):
    for p in ['nbs', 'posedistill', 'settings.ini', 'setup.py', 'tests', '_quarto.yml', '.ci/run', 'Makefile']:
        assert (root / p).exists(), p
    ini = (root / 'settings.ini').read_text()
    assert 'tst_flags = notest slow cuda' in ini
    assert 'nbdev==2.4.14' in ini and 'execnb<0.2' in ini and 'fastcore>=1.12,<1.13' in ini

# ---------------------------------------------------------------- lesson conventions (CONTRIBUTING.md)
_NBS = sorted((Path(__file__).resolve().parents[1] / 'nbs').glob('*.ipynb'))

def import_rule_violations(nb_path):
    """Cells that mix imports with other code. nbdev's docs processing executes every cell holding an import
    (nbdev.processors._do_eval), so such a cell runs its work at docs time. Mirrors _do_eval: cells marked
    export/exports/exporti/exec_doc and `#| eval: false` cells are exempt; a cell is fine when its top-level
    statements are all imports."""
    from execnb.nbio import read_nb
    from nbdev.process import extract_directives
    bad = []
    for i, c in enumerate(read_nb(nb_path).cells):
        if c.cell_type != 'code' or not c.source or 'nbdev_export' + '()' in c.source: continue
        dirs = extract_directives(c, remove=False)
        if dirs.keys() & {'export', 'exports', 'exporti', 'exec_doc'}: continue
        if dirs.get('eval:', [''])[0].lower() == 'false': continue
        trees = c.parsed_()
        if not trees: continue
        if not any(isinstance(n, (ast.Import, ast.ImportFrom)) for t in trees for n in ast.walk(t)): continue
        if all(isinstance(t, (ast.Import, ast.ImportFrom)) for t in trees): continue
        first = next((l for l in c.source.splitlines() if l.strip() and not l.lstrip().startswith('#')), '')
        bad.append(f'cell {i}: {first.strip()}')
    return bad

@pytest.mark.parametrize('nb', _NBS, ids=[p.stem for p in _NBS])
def test_imports_in_their_own_cells(nb):
    bad = import_rule_violations(nb)
    assert not bad, (f'{nb.name}: these cells mix imports with other code (nbdev runs them when it builds the docs; '
                     'put the imports in a cell of their own):\n  ' + '\n  '.join(bad))

_OUTSIDE = re.compile(r'REFERENCE\.md|\bREFERENCE section')

@pytest.mark.parametrize('nb', _NBS, ids=[p.stem for p in _NBS])
def test_no_mention_of_reference_md(nb):
    "Papers are cited through nbs/99_references.ipynb; a reader never sees files outside the repository."
    hits = [l.strip()[:120] for l in nb.read_text().splitlines() if _OUTSIDE.search(l)]
    assert not hits, f'{nb.name} mentions REFERENCE.md (cite 99_references.ipynb#<id> instead):\n  ' + '\n  '.join(hits)
