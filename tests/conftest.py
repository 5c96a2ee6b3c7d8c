import os, sys
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture
def root(): return ROOT

@pytest.fixture
def cli_env():
    "Environment for subprocesses: the venv's bin first on PATH, a non-interactive matplotlib backend."
    env = dict(os.environ, MPLBACKEND='Agg')
    env['PATH'] = str(Path(sys.executable).parent) + os.pathsep + env.get('PATH', '')
    return env
