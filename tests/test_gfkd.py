"Global-filter students: failure handling and a short distilled training run (the lesson has the rest)."
import pytest, torch
from posedistill.gfkd import gf_student, resized, gf_losses
from posedistill.tde import distilpose_teacher
from posedistill.train import freeze
from posedistill.recipes import run_recipe

def test_wrong_input_size_names_both_grids():
    s = gf_student('cpu', 'gd', backbone='stem')
    with pytest.raises(ValueError, match=r'16x12 token grid.*8x6 grid.*resized'):
        s(torch.randn(1, 3, 128, 96))

def test_resized_student_runs_and_keeps_weights():
    s = gf_student('cpu', 'gs')
    r = resized(s, (128, 96))
    assert r.head.grid == (32, 24) and r(torch.randn(1, 3, 128, 96))['coords'].shape == (1, 17, 2)
    a, b = dict(s.named_parameters()), dict(r.named_parameters())
    assert torch.equal(a['head.tokenpose.embed.weight'], b['head.tokenpose.embed.weight'])
    with pytest.raises(ValueError, match='only regression students'):
        resized(gf_student('cpu', 'gs', 'simcc'), (128, 96))

def test_bad_configs():
    with pytest.raises(ValueError, match='num_filters'): gf_student('cpu', 'gd', num_filters=0)
    with pytest.raises(ValueError, match=r'\(128, 96\) bins'): gf_student('cpu', 'gs', 'simcc', bins=(64, 48))
    with pytest.raises(ValueError, match="mixer must be one of"): gf_student('cpu', 'mlp')
    with pytest.raises(ValueError, match='do not apply'):
        gf_losses(gf_student('cpu', 'gs'), freeze(distilpose_teacher('cpu')), ('kd_sm',))

@pytest.mark.parametrize('readout', ['regression', 'simcc'])
def test_distilled_training_steps(readout, tmp_path):
    te = freeze(distilpose_teacher('cpu'))
    extra, lw = gf_losses(gf_student('cpu', 'gd', readout), te)
    r = run_recipe('gf_student_gd', 'cpu', seed=0, steps=2, n_train=64, n_val=32, epochs=1, teacher=te,
                   model_kw=dict(readout=readout), extra_losses=extra, loss_weights=lw, ckpt_dir=tmp_path / 'run',
                   track_valid=False)
    assert r.metrics['steps'] == 2 and set(extra) <= set(r.metrics['extra_losses'])
    assert (tmp_path / 'run' / 'last.pt').is_file()

def test_token_geometry_pooling():
    from posedistill.tde import check_token_geometry
    te, s = freeze(distilpose_teacher('cpu')), gf_student('cpu', 'gs')      # 16x12 student grid, 8x6 teacher grid
    with pytest.raises(ValueError, match='differ'): check_token_geometry(s, te)
    check_token_geometry(s, te, pool=True)
    with pytest.raises(ValueError, match='differ'):
        check_token_geometry(gf_student('cpu', 'gs', input_size=(60, 48), patch_size=(4, 4)), te, pool=True)
