"""`posedistill train RECIPE --data ...` and `posedistill eval CKPT ...` end to end on the real samples of tests/data,
laid out as the full datasets (COCO's official layout, MMPose's MPII layout); the scores come from the real evaluators."""
import contextlib, io, json, shutil, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
from posedistill.cli import main
from posedistill import metrics as M
from posedistill.realdata import load_trained, evaluate_mpii, real_datasets, PCKH_APPROX

DATA = Path(__file__).resolve().parent / 'data'
TINY = ['--input-size', '32x24', '--batch-size', '4', '--device', 'cpu']

def cli(*args):
    "`main(args)` in this process: (exit code, stdout, stderr)."
    with contextlib.redirect_stdout(io.StringIO()) as o, contextlib.redirect_stderr(io.StringIO()) as e:
        try: code = main([str(a) for a in args])
        except SystemExit as x: code = x.code
    return code, o.getvalue(), e.getvalue()

def one_line_error(r, cmd, *words):
    code, out, err = r
    assert code == 1, (code, out, err)
    assert err.count('\n') == 1 and err.startswith(f'posedistill {cmd}: error: '), err
    for w in words: assert w in err, err
    return err

@pytest.fixture(scope='module')
def roots(tmp_path_factory):
    "The samples laid out as COCO (annotations/person_keypoints_{train,val}2017.json, train2017/, val2017/) and MPII."
    t = tmp_path_factory.mktemp('layouts')
    coco, mpii = t / 'coco', t / 'mpii'
    (coco / 'annotations').mkdir(parents=True); (mpii / 'annotations').mkdir(parents=True)
    for split in ('train', 'val'):
        shutil.copy(DATA / 'coco' / 'test_coco.json', coco / 'annotations' / f'person_keypoints_{split}2017.json')
        (coco / f'{split}2017').mkdir()
        for im in (DATA / 'coco').glob('*.jpg'): (coco / f'{split}2017' / im.name).symlink_to(im)
        shutil.copy(DATA / 'mpii' / 'test_mpii.json', mpii / 'annotations' / f'mpii_{split}.json')
    (mpii / 'images').mkdir()
    for im in (DATA / 'mpii').glob('*.jpg'): (mpii / 'images' / im.name).symlink_to(im)
    return {'coco': coco, 'mpii': mpii, 'tmp': t}

def train_run(roots, kind, steps):
    "The regression recipe trained `steps` steps on the `kind` samples into a run folder."
    out = roots['tmp'] / f'run_{kind}'
    r = cli('train', 'regression', '--data', f"{kind}:{roots[kind]}", '--steps', steps, '--out', out, *TINY)
    assert r[0] == 0, r
    return out

@pytest.fixture(scope='module')
def coco_run(roots): return train_run(roots, 'coco', 2)

@pytest.fixture(scope='module')
def mpii_run(roots): return train_run(roots, 'mpii', 1)

def test_coco_train_eval(roots, coco_run, tmp_path):
    assert {'run.json', 'last.pt', 'metrics.json'} <= {p.name for p in coco_run.iterdir()}
    assert json.loads((coco_run / 'run.json').read_text())['data']['kind'] == 'coco'
    res, pred = tmp_path / 'eval.json', tmp_path / 'pred.json'
    code, out, err = cli('eval', coco_run, '--data', f"coco:{roots['coco']}", '--out', res, '--predictions', pred)
    assert code == 0, err
    assert 'COCO keypoint AP (OKS, pycocotools), ground-truth boxes' in out and '| AP |' in out
    r = json.loads(res.read_text())
    assert 0 <= r['AP'] <= 100 and r['flip_test'] is True and r['people'] == 12
    # the number is pycocotools' on the written predictions, and what training reported (same crops, flip test)
    ann = roots['coco'] / 'annotations' / 'person_keypoints_val2017.json'
    assert r['AP'] == pytest.approx(100 * M.coco_keypoint_ap(str(ann), str(pred))['AP'], abs=1e-9)
    assert r['AP'] == pytest.approx(json.loads((coco_run / 'metrics.json').read_text())['AP'], abs=1e-9)
    assert len(json.loads(pred.read_text())) == 12

def test_coco_eval_detections_no_flip(roots, coco_run):
    code, out, err = cli('eval', coco_run / 'last.pt', '--no-flip', '--bbox-file',
                         DATA / 'coco' / 'test_coco_det_AP_H_56.json')
    assert code == 0, err
    assert 'detected boxes' in out and '| flip_test | False |' in out

def test_mpii_train_eval(roots, mpii_run, tmp_path):
    res = tmp_path / 'eval.json'
    code, out, err = cli('eval', mpii_run, '--out', res)       # --data defaults to the run's
    assert code == 0, err
    r = json.loads(res.read_text())
    assert r['measure'] == PCKH_APPROX and PCKH_APPROX in out and 0 <= r['PCKh@0.5'] <= 100
    model, _ = load_trained(mpii_run)
    ds = real_datasets(f"mpii:{roots['mpii']}", model.input_size, splits=('val',))['val']
    assert r['PCKh@0.5'] == pytest.approx(evaluate_mpii(model, ds)['PCKh@0.5'], abs=1e-9)

def test_mpii_headbox_field_is_official_pckh(roots, mpii_run, tmp_path):
    root = tmp_path / 'mpii'
    shutil.copytree(roots['mpii'], root, symlinks=True)
    entries = json.loads((root / 'annotations' / 'mpii_val.json').read_text())
    for e in entries:
        (x1, y1), (x2, y2) = e['joints'][8], e['joints'][9]
        e['headbox'] = [[min(x1, x2) - 20, min(y1, y2)], [max(x1, x2) + 20, max(y1, y2)]]
    (root / 'annotations' / 'mpii_val.json').write_text(json.dumps(entries))
    code, out, err = cli('eval', mpii_run, '--data', f'mpii:{root}', '--out', tmp_path / 'e.json')
    assert code == 0, err
    r = json.loads((tmp_path / 'e.json').read_text())
    assert r['measure'] == 'PCKh' and 0 <= r['PCKh@0.5'] <= 100

def test_synth_train_eval(tmp_path):
    out = tmp_path / 'run'
    code, o, err = cli('train', 'regression', '--data', 'synth', '--steps', '1', '--n-train', '8', '--n-val', '8',
                       '--out', out, *TINY)
    assert code == 0, err
    assert 'SynthPose' in o
    code, o, err = cli('eval', out, '--n-test', '8', '--out', tmp_path / 'e.json')
    assert code == 0, err
    r = json.loads((tmp_path / 'e.json').read_text())
    assert 'test split' in r['measure'] and 0 <= r['PCK@0.05'] <= 100 and 0 <= r['AP'] <= 100

def test_bad_inputs(roots, coco_run, mpii_run, tmp_path):
    coco = f"coco:{roots['coco']}"
    one_line_error(cli('train', 'regression', '--data', f'coco:{tmp_path}/nowhere'), 'train', 'not found', 'nowhere')
    half = tmp_path / 'half'
    shutil.copytree(roots['coco'], half, symlinks=True)
    (half / 'annotations' / 'person_keypoints_train2017.json').unlink()
    one_line_error(cli('train', 'regression', '--data', f'coco:{half}'), 'train',
                   'annotations/person_keypoints_train2017.json not found')
    # eval needs only the validation split
    assert cli('eval', coco_run, '--data', f'coco:{half}', '--no-flip')[0] == 0
    one_line_error(cli('eval', coco_run, '--data', f"mpii:{roots['coco']}"), 'eval', 'annotations/mpii_val.json')
    one_line_error(cli('train', 'regression', '--data', 'kitti:/x'), 'train', "'synth', 'coco:PATH' or 'mpii:PATH'")
    err = one_line_error(cli('train', 'no_such_recipe', '--data', coco), 'train', "unknown recipe 'no_such_recipe'")
    assert 'distilpose_student' in err and 'cdkd_student_m4' in err        # every registered recipe is listed
    one_line_error(cli('train', 'distilpose_student', '--data', f"mpii:{roots['mpii']}", '--no-teacher'), 'train',
                   'cannot be trained on MPII')
    one_line_error(cli('train', 'student_regression', '--data', coco), 'train', '--teacher CKPT', '--no-teacher')
    one_line_error(cli('eval', coco_run, '--data', f"mpii:{roots['mpii']}", '--bbox-file', 'x.json'), 'eval')
    one_line_error(cli('eval', tmp_path / 'no_run'), 'eval', 'not found')
    one_line_error(cli('eval', tmp_path), 'eval', 'no run.json')
    # a checkpoint of another model: MPII weights under a COCO recipe, an MPII model on COCO data
    mixed = tmp_path / 'mixed'; mixed.mkdir()
    shutil.copy(coco_run / 'run.json', mixed); shutil.copy(mpii_run / 'last.pt', mixed)
    one_line_error(cli('eval', mixed), 'eval', 'does not hold the weights of recipe')
    one_line_error(cli('eval', mpii_run, '--data', coco), 'eval', 'predicts the mpii16 joints')
    (mixed / 'last.pt').write_bytes(b'not a checkpoint')
    one_line_error(cli('eval', mixed), 'eval', 'corrupted or not a torch checkpoint')
    # argparse's errors: exit code 2, one line naming the command
    code, out, err = cli('train', 'regression', '--data', coco, '--stepz', '3')
    assert code == 2 and err.count('\n') == 1 and 'posedistill train: error: unrecognized arguments: --stepz' in err
    code, out, err = cli('eval', coco_run, '--batch-size', '0')
    assert code == 2 and err.count('\n') == 1 and 'posedistill eval: error:' in err

def test_teacher(roots, mpii_run, tmp_path):
    coco = f"coco:{roots['coco']}"
    small = tmp_path / 'small'        # a 32x24 model: not the 128x96 teacher student_regression distils from
    assert cli('train', 'student_regression', '--data', coco, '--no-teacher', '--steps', '1', '--out', small, *TINY)[0] == 0
    one_line_error(cli('train', 'student_regression', '--data', coco, '--teacher', small, '--steps', '1', *TINY[2:]),
                   'train', 'takes 32x24 images', 'teacher_input_size')
    one_line_error(cli('train', 'student_regression', '--data', coco, '--teacher', tmp_path / 'nope'), 'train', 'not found')
    teacher = tmp_path / 'teacher'
    assert cli('train', 'regression', '--data', coco, '--steps', '1', '--batch-size', '4', '--out', teacher)[0] == 0
    out = tmp_path / 'student'
    code, o, err = cli('train', 'student_regression', '--data', coco, '--teacher', teacher, '--steps', '1',
                       '--out', out, *TINY[2:])
    assert code == 0, err
    run = json.loads((out / 'run.json').read_text())
    assert run['extra_losses'] and run['data']['teacher'] == str(teacher)
    # teachers the method cannot use: a recipe without a distillation method, an MPII model for COCO data
    one_line_error(cli('train', 'simcc', '--data', coco, '--teacher', teacher, '--steps', '1', *TINY), 'train',
                   "cannot distil from teacher", 'no distillation method')
    one_line_error(cli('train', 'student_regression', '--data', coco, '--teacher', mpii_run), 'train',
                   'predicts the mpii16 joints')

def run_exe(args, env):
    exe = shutil.which('posedistill', path=env['PATH'])
    cmd = [exe, *args] if exe else [sys.executable, '-m', 'posedistill.cli', *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)

@pytest.mark.parametrize('cmd,words', [('train', ['coco:PATH', 'mpii:PATH', '--teacher', 'run folder']),
                                       ('eval', ['PCKh', 'pycocotools', '--out']),
                                       ('bench', ['mixers', 'students', 'render'])])
def test_help(cli_env, cmd, words):
    r = run_exe([cmd, '--help'], cli_env)
    assert r.returncode == 0, r.stderr
    for w in words: assert w in r.stdout, (w, r.stdout)

def test_error_is_one_line_on_the_console(cli_env, tmp_path):
    r = run_exe(['train', 'regression', '--data', f'coco:{tmp_path}/nowhere'], cli_env)
    assert r.returncode == 1 and r.stderr.count('\n') == 1 and 'Traceback' not in r.stderr, r.stderr
    assert r.stderr.startswith('posedistill train: error: COCO folder')
