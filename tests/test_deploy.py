"End-to-end checks of `posedistill export` and of the deployment's failure cases (they need the deploy extra)."
import json, os, shutil, subprocess, sys, warnings
import pytest

for _mod in ('onnx', 'onnxscript', 'onnxruntime'):
    pytest.importorskip(_mod, reason='needs the optional deploy extra: pip install "posedistill[deploy]"')

import torch
from posedistill.cli import main
from posedistill.deploy import (export_onnx, check_parity, onnx_session, run_onnx, load_for_export, INFERENCE_FORMS,
                                DEPLOY_EXTRA)
from posedistill.models import build_model
from posedistill.recipes import get_recipe, build_recipe_model
from posedistill.train import save_checkpoint

TINY = dict(patch_size=(1, 1), dim=16, depth=1, num_heads=2)

def cli(args, env, timeout=300):
    exe = shutil.which('posedistill', path=env['PATH'])
    cmd = [exe, *args] if exe else [sys.executable, '-m', 'posedistill.cli', *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=dict(env, OMP_NUM_THREADS='1'), timeout=timeout)

def fake_run(folder, model='token_gd', input_size=(20, 28), model_kw=TINY):
    "A run folder as run_recipe writes it (run.json + a Trainer checkpoint last.pt), without training."
    recipe = get_recipe('regression', model=model, input_size=input_size, model_kw=model_kw)
    torch.manual_seed(0)
    net = build_recipe_model(recipe)
    folder.mkdir()
    (folder / 'run.json').write_text(json.dumps(dict(recipe=recipe, seed=0)))
    save_checkpoint(folder / 'last.pt', {'format': 'posedistill.train/1', 'model': net.state_dict(), 'epoch': 1})
    return net.eval()

def run_main(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err

def test_cli_export_run_folder_end_to_end(cli_env, tmp_path):
    net = fake_run(tmp_path / 'run')
    out = tmp_path / 'student.onnx'
    r = cli(['export', str(tmp_path / 'run'), '--format', 'onnx', '--out', str(out), '--with-decode'], cli_env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert out.is_file() and 'wrote' in r.stdout and 'max abs difference' in r.stdout
    s = onnx_session(out)
    assert [o.name for o in s.get_outputs()] == ['coords', 'score', 'sigma', 'keypoints', 'scores']
    par = check_parity(net, out, batches=(1, 7), session=s)      # odd, non-square grid (5x7), batch 1 and 7
    assert all(v < 1e-4 for k in ('coords', 'score', 'sigma') for v in par[k].values()), par
    assert max(par['keypoints'].values()) < 1e-3, par
    assert sorted(p.name for p in tmp_path.iterdir()) == ['run', 'student.onnx']   # no temporary file left

def test_cli_export_weights_file_with_model_name(tmp_path, capsys):
    torch.manual_seed(0)
    net = build_model('regression_stemnet', 'cpu', input_size=(36, 28)).eval()
    torch.save(net.state_dict(), tmp_path / 'weights.pt')
    code, out, err = run_main(['export', str(tmp_path / 'weights.pt'), '--model', 'regression_stemnet',
                               '--input-size', '36x28', '--out', str(tmp_path / 'm.onnx')], capsys)
    assert code == 0, err
    got = run_onnx(onnx_session(tmp_path / 'm.onnx'), torch.zeros(3, 3, 36, 28))
    with torch.no_grad(): ref = net(torch.zeros(3, 3, 36, 28))['coords']
    assert (torch.from_numpy(got['coords']) - ref).abs().max() < 1e-4

@pytest.mark.parametrize('setup, args, expected', [
    ('other', ['--model', 'token_gs'], 'does not hold the weights of posedistill model'),
    ('text', ['--model', 'token_gs'], 'not a torch checkpoint'),
    ('missing', ['--model', 'token_gs'], 'not found'),
    ('weights', [], 'no run.json'),                        # a weights file outside a run folder needs --model
    ('weights', ['--model', 'token_gs'], 'does not hold the weights'),   # the wrong model for these weights
    ('run_json', [], 'not a posedistill run'),
])
def test_cli_export_rejects_what_is_not_a_posedistill_model(tmp_path, capsys, setup, args, expected):
    ck = {'other': tmp_path / 'other.pt', 'text': tmp_path / 'notes.txt', 'missing': tmp_path / 'missing.pt',
          'weights': tmp_path / 'w.pt', 'run_json': tmp_path / 'run'}[setup]
    if setup == 'other': torch.save({'layer.weight': torch.zeros(3)}, ck)
    if setup == 'text': ck.write_text('not a checkpoint')
    if setup == 'weights': torch.save(build_model('regression_stemnet', 'cpu', input_size=(36, 28)).state_dict(), ck)
    if setup == 'run_json': ck.mkdir(); (ck / 'run.json').write_text(json.dumps({'something': 'else'}))
    code, out, err = run_main(['export', str(ck), *args, '--out', str(tmp_path / 'x.onnx')], capsys)
    assert code == 1 and expected in err, err
    assert err.count('\n') == 1 and err.startswith('posedistill export: error:'), err
    assert not (tmp_path / 'x.onnx').exists()

def test_cli_export_missing_output_folder(tmp_path, capsys):
    fake_run(tmp_path / 'run')
    code, out, err = run_main(['export', str(tmp_path / 'run'), '--out', str(tmp_path / 'nope' / 'x.onnx')], capsys)
    assert code == 1 and 'does not exist' in err and err.count('\n') == 1, err

def test_without_the_extra_the_error_names_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, 'onnxruntime', None)      # as if it were not installed
    code, out, err = run_main(['export', str(tmp_path), '--out', str(tmp_path / 'x.onnx')], capsys)
    assert code == 1 and 'posedistill[deploy]' in err and 'onnxruntime' in err, err
    with pytest.raises(ImportError, match=r'posedistill\[deploy\]'):
        export_onnx(build_model('regression_stemnet', 'cpu', input_size=(36, 28)), tmp_path / 'x.onnx')
    assert 'posedistill[deploy]' in DEPLOY_EXTRA

def test_export_bad_input(tmp_path):
    m = build_model('token_gs', 'cpu', input_size=(20, 28), **TINY).eval()
    with pytest.raises(ValueError, match="does not match the model's input size"):
        export_onnx(m, tmp_path / 'a.onnx', input_size=(32, 24))
    with pytest.raises(FileNotFoundError, match='does not exist'):
        export_onnx(m, tmp_path / 'missing' / 'a.onnx')
    with pytest.raises(ValueError, match='not a posedistill pose model'):
        export_onnx(torch.nn.Conv2d(3, 3, 1), tmp_path / 'a.onnx')
    with pytest.raises(ValueError, match='is a folder'):
        export_onnx(m, tmp_path)
    assert list(tmp_path.iterdir()) == []

def test_training_mode_warns_and_exports_eval(tmp_path):
    torch.manual_seed(0)
    m = build_model('regression_stemnet', 'cpu', input_size=(36, 28)).train()
    with pytest.warns(UserWarning, match='training mode'):
        p = export_onnx(m, tmp_path / 'a.onnx', dynamic_batch=False, batch_size=2)
    assert m.training                                         # the model itself is left as it was
    par = check_parity(m, p, batches=(2,))                    # against the eval-mode model
    assert par['coords'][2] < 1e-4, par

def test_failed_export_leaves_no_partial_file(tmp_path, monkeypatch):
    m = build_model('token_gs', 'cpu', input_size=(20, 28), **TINY).eval()
    target = tmp_path / 'model.onnx'
    target.write_bytes(b'previous export')
    monkeypatch.setattr('posedistill.deploy.INFERENCE_FORMS', {})    # the filters as trained do not export
    with pytest.raises(Exception, match='complex'):
        export_onnx(m, target)
    assert target.read_bytes() == b'previous export'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['model.onnx']


def test_load_for_export_builds_any_methods_model_in_a_fresh_process(tmp_path):
    "A run folder of a method lesson's recipe (here a GS student) loads without importing the method module first."
    import posedistill.gfkd                                     # noqa: F401 (registers the recipe in this process)
    from posedistill.recipes import run_recipe
    run_recipe('gf_student_gs', steps=1, n_train=64, n_val=16, ckpt_dir=tmp_path / 'run', teacher=False,
               track_valid=False)
    code = ("from posedistill.deploy import load_for_export; "
            f"print(type(load_for_export({str(tmp_path / 'run')!r})).__name__)")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == 'FilterStudent', r.stderr[-2000:]
