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
