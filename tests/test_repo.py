"Checks on the repository itself: README generated from index.ipynb, layout of the design card."
import subprocess, sys, tempfile
from pathlib import Path

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
