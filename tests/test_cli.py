"End-to-end checks of the `posedistill` console script (what a user types after `make demo`)."
import subprocess, sys, shutil
import pytest

def run(args, env, timeout=300):
    exe = shutil.which('posedistill', path=env['PATH'])
    cmd = [exe, *args] if exe else [sys.executable, '-m', 'posedistill.cli', *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)

def test_help(cli_env):
    r = run(['--help'], cli_env)
    assert r.returncode == 0 and 'demo' in r.stdout and 'bench' in r.stdout

def test_unknown_command_fails_clearly(cli_env):
    r = run(['fly'], cli_env)
    assert r.returncode == 2 and 'invalid choice' in r.stderr

def test_demo_smoke(cli_env):
    r = run(['demo', '--smoke'], cli_env)
    assert r.returncode == 0, r.stderr
    assert 'multires_err_px' in r.stdout

def test_bench_render_quick(cli_env):
    r = run(['bench', 'render', '--quick'], cli_env)
    assert r.returncode == 0, r.stderr
    assert 'samples/s' in r.stdout

def test_train_cli_writes_checkpoint_and_resumes(cli_env, tmp_path):
    args = ['train', '--model', 'tiny', '--data', 'random', '--epochs', '1', '--train-samples', '64',
            '--val-samples', '16', '--batch-size', '16', '--out', str(tmp_path), '--no-progress']
    r = run(args, cli_env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / 'last.pt').exists()
    import torch
    test_epoch = lambda: torch.load(tmp_path / 'last.pt', weights_only=True)['epoch']
    assert test_epoch() == 1
    args[args.index('--epochs') + 1] = '2'
    r = run([*args, '--resume', 'auto'], cli_env)   # one more epoch from the checkpoint
    assert r.returncode == 0, r.stderr[-2000:]
    assert test_epoch() == 2

def test_bench_mixers_quick(cli_env):
    r = run(['bench', 'mixers', '--quick'], cli_env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'GlobalFilter' in r.stdout and 'key ratios' in r.stdout

def test_bench_students_quick(cli_env):
    r = run(['bench', 'students', '--quick', '--batches', '1', '4'], cli_env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'gs / regression / none' in r.stdout and 'efficiency' in r.stdout
    assert r.stdout.count('| attention /') == 6                      # 3 attention students x 2 batch sizes

def test_bench_students_bad_batch(cli_env):
    r = run(['bench', 'students', '--quick', '--batches', '0'], cli_env)
    assert r.returncode == 1 and r.stderr.count('\n') == 1 and '--batches' in r.stderr
