"""`posedistill demo` end to end (tiny profile): the table and the report, resuming after Ctrl-C and after a kill,
--fresh, and one-line errors for bad input."""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest

ENV = {**os.environ, 'OMP_NUM_THREADS': '1', 'MPLBACKEND': 'Agg'}
KEYS = ('PCK@0.05', 'PCK@0.1', 'AP')


def demo(*args, check=True):
    p = subprocess.run([sys.executable, '-m', 'posedistill.cli', 'demo', *map(str, args)], capture_output=True,
                       text=True, env=ENV, timeout=300)
    if check: assert p.returncode == 0, p.stderr[-3000:]
    return p


def start(*args):
    return subprocess.Popen([sys.executable, '-m', 'posedistill.cli', 'demo', *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV)


def finished(root):
    return {p.parent.name: p.stat().st_mtime_ns for p in Path(root).glob('tiny/seed*/*/stage.json')}


def wait_for_stage(proc, root, timeout=120):
    "Wait until some stage of `root` is finished while `proc` still runs; return what is finished."
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None: pytest.fail(f"the demo ended (rc {proc.returncode}) before it could be interrupted")
        f = finished(root)
        if f: return f
        time.sleep(0.02)
    pytest.fail('no stage finished in time')


def scores(root):
    rows = json.loads((Path(root) / 'tiny/report/results.json').read_text())['rows']
    return [{k: v for k, v in r.items() if any(k.startswith(m) for m in KEYS)} for r in rows]


def test_demo_tiny_table_and_report(tmp_path):
    p = demo('--profile', 'tiny', '--methods', 'cdkd', '--jobs', '1', '--out', tmp_path)
    assert '| CDKD (m = 4) | SimCC HRNet at 16x16 (teacher 64x64) | 16x16 |' in p.stdout
    assert 'Tiny smoke run' in p.stdout and '| teacher | SimCC HRNet teacher | 64x64 |' in p.stdout
    rep = tmp_path / 'tiny/report'
    assert (rep / 'results.md').read_text().strip() in p.stdout
    rows = json.loads((rep / 'results.json').read_text())['rows']
    assert [r['method'] for r in rows] == ['teacher', 'CDKD (m = 4)']
    r = rows[1]
    for k in KEYS:
        assert all(0 <= v <= 100 for v in r[k + ' alone'] + r[k + ' distilled'])
        assert r[k + ' gain'] == [b - a for a, b in zip(r[k + ' alone'], r[k + ' distilled'])]
    cfg = json.loads((rep / 'configs/seed0_cdkd_kd.json').read_text())
    assert cfg['recipe']['name'] == 'cdkd_student_m4' and 'cdkd_logit' in cfg['extra_losses']
    html = (rep / 'report.html').read_text()
    assert html.count('data:image/png;base64') >= 2 and 'cdkd_kd' in html
    assert f"report: {rep / 'report.html'}" in p.stdout


def test_demo_resumes_after_ctrl_c(tmp_path):
    out, ref = tmp_path / 'a', tmp_path / 'b'
    proc = start('--profile', 'tiny', '--methods', 'ocd', '--jobs', '2', '--out', out)
    before = wait_for_stage(proc, out)
    proc.send_signal(signal.SIGINT)                         # Ctrl-C
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert 'interrupted' in err and 'run the same command again to resume' in err
    assert not (out / 'tiny/report').exists()               # stopped before the end
    kept = finished(out)
    assert set(before) <= set(kept) and len(kept) < 4
    p = demo('--profile', 'tiny', '--methods', 'ocd', '--jobs', '2', '--out', out)
    assert f'{len(kept)} of 4 stages already finished' in p.stdout
    after = finished(out)
    assert len(after) == 4 and all(after[k] == t for k, t in kept.items())   # finished stages read back, not retrained
    for k in kept: assert f'{k}:' not in p.stdout          # ...and not reported as trained
    demo('--profile', 'tiny', '--methods', 'ocd', '--jobs', '1', '--out', ref)
    assert scores(out) == scores(ref)                      # nothing lost: as if never interrupted


def test_demo_resumes_after_kill_and_never_reuses_a_half_run(tmp_path):
    proc = start('--profile', 'tiny', '--methods', 'cdkd', '--jobs', '1', '--out', tmp_path)
    wait_for_stage(proc, tmp_path)
    proc.kill(); proc.communicate(timeout=60)
    kept = finished(tmp_path)
    started = {p.name for p in (tmp_path / 'tiny/seed0').iterdir()}
    p = demo('--profile', 'tiny', '--methods', 'cdkd', '--jobs', '1', '--out', tmp_path)
    after = finished(tmp_path)
    assert len(after) == 3 and all(after[k] == t for k, t in kept.items())
    assert f'{len(kept)} of 3 stages already finished' in p.stdout
    for k in started - set(kept): assert f'{k}:' in p.stdout            # the half-trained stage was trained again
    ref = tmp_path.parent / (tmp_path.name + '_ref')                      # uninterrupted, other worker processes
    demo('--profile', 'tiny', '--methods', 'cdkd', '--jobs', '2', '--out', ref)
    assert scores(tmp_path) == scores(ref)        # CDKD's projectors too start from seeded weights in every process


def test_demo_fresh_moves_old_runs_aside(tmp_path):
    demo('--profile', 'tiny', '--methods', 'ocd', '--jobs', '1', '--out', tmp_path)
    p = demo('--profile', 'tiny', '--methods', 'ocd', '--jobs', '1', '--out', tmp_path, '--fresh')
    bak = [d for d in tmp_path.iterdir() if d.name.startswith('tiny.') and d.name.endswith('.bak')]
    assert len(bak) == 1 and (bak[0] / 'report/results.md').is_file()
    assert 'old runs were moved to' in p.stdout and 'already finished' not in p.stdout


@pytest.mark.parametrize('args, rc, msg', [
    (['--methods', 'gf,dark'], 1, "unknown method(s) ['dark']"),
    (['--seeds', '0'], 2, '--seeds'),
    (['--jobs', '0'], 2, '--jobs'),
    (['--profile', 'huge'], 2, "invalid choice: 'huge'"),
    (['--colour'], 2, 'unrecognized arguments: --colour'),
    (['--device', 'tpu'], 1, 'tpu'),
])
def test_demo_bad_input_is_one_line(tmp_path, args, rc, msg):
    p = demo('--profile', 'tiny', '--out', tmp_path / 'runs', *args, check=False)
    assert p.returncode == rc, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and msg in lines[0] and lines[0].startswith('posedistill demo'), p.stderr


def test_demo_out_is_a_file(tmp_path):
    f = tmp_path / 'file.txt'; f.write_text('mine')
    p = demo('--profile', 'tiny', '--out', f, check=False)
    assert p.returncode == 1 and p.stderr.strip() == f"posedistill demo: error: --out {f} is a file, not a folder"
    assert f.read_text() == 'mine'
