"CDKD (posedistill.sape, posedistill.cca): failure handling, and a 2-step training of the distiller on tiny data."
import json, math
import pytest
import torch
from posedistill.sape import SAPE, SAU, feature_loss, projector
from posedistill.cca import (merge_bins, class_align, logit_loss, grad_reverse, reversal_coeff, ETHT, cdkd_losses,
                             SAPETerm, CCATerm)
from posedistill.models import build_model, count_params, count_flops
from posedistill.recipes import get_recipe, run_recipe, make_datasets, build_recipe_model
from posedistill.synthpose import SynthPose, SynthPoseConfig
from posedistill.tde import TeacherCache
from posedistill.train import Trainer, freeze, NonFiniteLossError

torch.set_num_threads(1)

@pytest.fixture(scope='module')
def pair():
    torch.manual_seed(0)
    return (build_model('simcc_hrnet', 'cpu', input_size=(16, 16)),
            freeze(build_model('simcc_hrnet', 'cpu', input_size=(64, 64))))

# ------------------------------------------------------------------ errors name the numbers
def test_merge_bins_errors_name_both_numbers():
    p = torch.softmax(torch.randn(2, 3, 96), -1)
    with pytest.raises(ValueError, match=r'cannot merge 96 bins in groups of m = 5'): merge_bins(p, 5)
    with pytest.raises(ValueError, match=r'got m = 0 for 96 bins'): merge_bins(p, 0)
    with pytest.raises(ValueError, match=r'got m = 2.0 for 96 bins'): merge_bins(p, 2.0)
    assert torch.allclose(merge_bins(p, 3).sum(-1), torch.ones(2, 3))

def test_logit_loss_shapes_and_mask():
    t, s = torch.randn(2, 4, 64), torch.randn(2, 4, 16)
    with pytest.raises(ValueError, match=r'm = 2 times the student'): logit_loss(s, t, 2)
    with pytest.raises(ValueError, match=r'weight must be \(B, K\) = \(2, 4\)'): logit_loss(s, t, 4, weight=torch.ones(4))
    assert logit_loss(s, t, 4, weight=torch.zeros(2, 4)) == 0
    tau = torch.tensor(3., requires_grad=True)
    logit_loss(s, t, 4, tau).backward()
    assert tau.grad is not None and torch.isfinite(tau.grad)

def test_feature_loss_eps_and_shapes():
    z = torch.zeros(2, 4, 8, 8, requires_grad=True)
    l = feature_loss(z, torch.zeros(2, 4, 8, 8))
    l.backward()
    assert math.isfinite(l.item()) and torch.isfinite(z.grad).all()
    with pytest.raises(ValueError, match=r'student \(projected\) \(2, 4, 8, 8\), teacher \(2, 4, 4, 4\)'):
        feature_loss(z, torch.zeros(2, 4, 4, 4))

def test_sape_errors():
    with pytest.raises(ValueError, match=r'SAPE takes student features \(B, 16, h, w\); got \(1, 8, 2, 2\)'):
        SAPE(16, 16, 4)(torch.randn(1, 8, 2, 2))
    with pytest.raises(ValueError, match='scale must be an int >= 1; got 0'): SAPE(16, 16, 0)
    with pytest.raises(ValueError, match='kernel_sizes must be odd'): SAU(16, 16, kernel_sizes=(2,))
    assert SAPE(16, 8, 8)(torch.randn(1, 16, 3, 1)).shape == (1, 8, 24, 8)

def test_grad_reverse_and_schedule():
    x = torch.ones(3, requires_grad=True)
    grad_reverse(x, 0.3).sum().backward()
    assert torch.allclose(x.grad, torch.full((3,), -0.3))
    with pytest.raises(ValueError, match='schedule must be one of'): reversal_coeff(0.1, 'exp')
    with pytest.raises(ValueError, match='ramp must be > 0'): reversal_coeff(0.1, ramp=0)
    with pytest.raises(ValueError, match='total_steps must be an int >= 1; got 0'): ETHT(0)
    with pytest.raises(ValueError, match=r'init must lie strictly inside \(lo, hi\) = \(1.0, 21.0\); got 25'): ETHT(5, init=25)

def test_etht_raises_the_loss():
    "Training ETHT's temperature with the student's optimiser moves it to where L_logit is larger."
    torch.manual_seed(1)
    t, s = torch.randn(4, 17, 64) * 8, torch.randn(4, 17, 16) * 8
    e = ETHT(10, init=4., schedule='constant')
    opt = torch.optim.SGD(e.parameters(), lr=0.01)
    before = logit_loss(s, t, 4, e.value).item()
    logit_loss(s, t, 4, e()).backward(); opt.step()
    assert logit_loss(s, t, 4, e.value).item() > before

def test_cdkd_losses_checks(pair):
    st, te = pair
    with pytest.raises(ValueError, match='the teacher must be frozen'):
        cdkd_losses(st, build_model('simcc_hrnet', 'cpu', input_size=(64, 64)), total_steps=5)
    with pytest.raises(ValueError, match='ETHT needs total_steps'): cdkd_losses(st, te)
    with pytest.raises(ValueError, match=r"teacher's SimCC bins \(y, x\) \(128, 128\) must be the same whole multiple "
                                         r"of the student's \(48, 48\)"):
        cdkd_losses(build_model('simcc_hrnet', 'cpu', input_size=(24, 24)), te, total_steps=5)
    with pytest.raises(ValueError, match='the student has no SimCC head'):
        cdkd_losses(build_model('regression_resnet', 'cpu', input_size=(16, 16)), te, total_steps=5)
    with pytest.raises(ValueError, match='feature=True, logit=True or both'):
        cdkd_losses(st, te, feature=False, logit=False)
    extra, lw = cdkd_losses(st, te, etht=False, monitor=False)                   # no ETHT: no total_steps needed
    assert set(extra) == {'cdkd_fea', 'cdkd_logit'} and extra['cdkd_logit'].etht is None
    extra, lw = cdkd_losses(st, te, total_steps=5, learn_weights=True)
    assert lw['cdkd_fea'] == lw['cdkd_logit'] == 1. and lw['cdkd_alpha'] == lw['cdkd_beta'] == 0.
    assert extra['cdkd_fea'].alpha.hi == 2. and extra['cdkd_logit'].beta.hi == pytest.approx(0.1)

def test_nan_teacher_is_caught(pair):
    st, _ = pair
    ds = SynthPose('train', n=8, sizes=((16, 16), (64, 64)), config=SynthPoseConfig.calibrated())
    dl = torch.utils.data.DataLoader(ds, batch_size=4)
    bad = freeze(build_model('simcc_hrnet', 'cpu', input_size=(64, 64)))
    with torch.no_grad(): bad.head.mlp_head_x.bias.fill_(float('nan'))
    extra, lw = cdkd_losses(st, bad, feature=False, etht=False)
    tr = Trainer(build_model('simcc_hrnet', 'cpu', input_size=(16, 16)), dl, teacher=bad, extra_losses=extra,
                 loss_weights=lw, student_input='image_16x16', teacher_input='image_64x64', epochs=1, progress=False,
                 live_plot=False)
    with pytest.raises(NonFiniteLossError, match="loss term 'cdkd_logit' is nan"): tr.train_step(next(iter(dl)))

# ------------------------------------------------------------------ the distiller trains, resumes, deploys bare
def test_two_step_training_with_cache(tmp_path):
    import posedistill.cca                                           # registers the cdkd recipes
    torch.manual_seed(0)
    teacher = freeze(build_model('simcc_hrnet', 'cpu', input_size=(64, 64)))
    tiny = dict(n_train=64, n_val=16)
    train_ds, _ = make_datasets(get_recipe('cdkd_student_m8', 'cpu', **tiny), teacher_input_size=(64, 64))
    cache = TeacherCache.build(teacher, train_ds, keys=('simcc_x', 'simcc_y', 'features'), progress=False)
    st = build_recipe_model(get_recipe('cdkd_student_m8', 'cpu', **tiny))
    extra, lw = cdkd_losses(st, teacher, total_steps=2, cache=cache)
    assert not any(getattr(f, 'needs_teacher', True) for f in extra.values())
    theta0 = extra['cdkd_logit'].etht.theta.item()
    kw = dict(seed=0, steps=2, epochs=1, teacher=False, extra_losses=extra, loss_weights=lw, track_valid=False,
              ckpt_dir=tmp_path / 'run', **tiny)
    r = run_recipe('cdkd_student_m8', 'cpu', **kw)
    assert r.metrics['steps'] == 2
    log = r.trainer.steps_log
    assert {'cdkd_fea', 'cdkd_logit', 'etht_T', 'sau_w0', 'sau_w1', 'sau_w2'} <= set(log) and len(log['etht_T']) == 2
    opt_ids = {id(p) for g in r.trainer.opt.param_groups for p in g['params']}
    for term in ('cdkd_fea', 'cdkd_logit'):                          # SAPE's and ETHT's parameters are trained
        assert all(id(p) in opt_ids for p in extra[term].parameters())
    assert int(extra['cdkd_logit'].etht.step) == 2 and extra['cdkd_logit'].etht.theta.item() != theta0
    base = build_recipe_model(get_recipe('cdkd_student_m8', 'cpu', **tiny))
    assert count_params(r.model) == count_params(base) and count_flops(r.model) == count_flops(base)
    # a second call reloads the run: the loss modules' state (ETHT's step, theta) comes back from the checkpoint
    extra2, lw2 = cdkd_losses(st, teacher, total_steps=2, cache=cache)
    r2 = run_recipe('cdkd_student_m8', 'cpu', **{**kw, 'extra_losses': extra2, 'loss_weights': lw2})
    assert int(extra2['cdkd_logit'].etht.step) == 2
    assert extra2['cdkd_logit'].etht.theta.item() == pytest.approx(extra['cdkd_logit'].etht.theta.item())
    assert r2.metrics['PCK@0.05'] == pytest.approx(r.metrics['PCK@0.05'])

def test_learnt_weights_rise(pair):
    "learn_weights: alpha and beta are trained through the reversal too; raising a weight raises the loss, so both rise."
    st, te = pair
    ds = SynthPose('train', n=8, sizes=((16, 16), (64, 64)), config=SynthPoseConfig.calibrated())
    dl = torch.utils.data.DataLoader(ds, batch_size=4)
    extra, lw = cdkd_losses(build_model('simcc_hrnet', 'cpu', input_size=(16, 16)), te, total_steps=4,
                            learn_weights=True, schedule='constant')
    tr = Trainer(build_model('simcc_hrnet', 'cpu', input_size=(16, 16)), dl, teacher=te, extra_losses=extra,
                 loss_weights=lw, student_input='image_16x16', teacher_input='image_64x64', epochs=1, progress=False,
                 live_plot=False)
    a0, b0 = extra['cdkd_fea'].alpha.value, extra['cdkd_logit'].beta.value
    logs = tr.train_step(next(iter(dl)))
    assert logs['cdkd_alpha'] == pytest.approx(a0) and logs['cdkd_beta'] == pytest.approx(b0)
    assert extra['cdkd_fea'].alpha.value > a0 and extra['cdkd_logit'].beta.value > b0
