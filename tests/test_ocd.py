"""posedistill.ocd: deploy() equality with a regression model built directly, the bad-input errors, the two
distillation losses, and a 2-step run of every recipe on tiny data (CPU, a few seconds)."""
import pytest
import torch

from posedistill.ocd import (OCDModel, MLPRegressionHead, deeppose_resnet, ocd_resnet, deploy, task_kd_loss,
                             cross_rep_loss, render_heatmaps, tcd_losses, DEFAULT_WEIGHTS)
from posedistill.models import build_model, count_params, count_flops
from posedistill.codecs import HeatmapCodec, RegressionCodec
from posedistill.kd import normalise_coords
from posedistill.recipes import run_recipe, get_recipe
from posedistill.train import freeze
from posedistill.tde import TeacherCache

torch.set_num_threads(1)
TINY = dict(steps=2, n_train=64, n_val=32, epochs=1, track_valid=False)


@pytest.mark.parametrize('hidden', [(256,), ()])
def test_deploy_equals_direct_regression_model(hidden):
    torch.manual_seed(0)
    two = ocd_resnet('cpu', hidden=hidden)
    dep, plain = deploy(two), deeppose_resnet('cpu', hidden=hidden)
    assert type(dep).__name__ == 'PoseModel' and not hasattr(dep, 'heatmap_head')
    assert count_params(dep) == count_params(plain) < count_params(two)
    assert count_flops(dep) == count_flops(plain) < count_flops(two)
    assert list(dep.state_dict()) == list(plain.state_dict())
    x = torch.randn(2, 3, 64, 48)
    torch.testing.assert_close(dep.predict(x)[0], two.predict(x)[0])
    # deploy copies: training the two-head model further does not change the deployed one
    with torch.no_grad(): two.head.fc.bias.add_(1.)
    assert not torch.allclose(dep.predict(x)[0], two.predict(x)[0])


def test_reduced_head_is_the_library_regression_model():
    ref = build_model('regression_resnet', 'cpu', input_size=(64, 48), loss='l1')
    dep = deploy(ocd_resnet('cpu', hidden=()))
    assert count_params(dep) == count_params(ref) and count_flops(dep) == count_flops(ref)
    dep.load_state_dict(ref.state_dict())                          # same names and shapes


def test_bad_input_errors():
    with pytest.raises(ValueError, match='the heatmap head predicts 16 keypoints but the regression head 17'):
        ocd_resnet('cpu', heatmap_keypoints=16)
    m = ocd_resnet('cpu')
    with pytest.raises(ValueError, match='must be a RegressionHead'):
        OCDModel(m.backbone, m.heatmap_head, m.heatmap_head, (64, 48), -2)
    with pytest.raises(ValueError, match='channels'):
        OCDModel(m.backbone, m.head, m.heatmap_head, (64, 48), -1)
    with pytest.raises(ValueError, match='no regression head'):
        deploy(build_model('heatmap_hrnet', 'cpu', input_size=(64, 48)))
    with pytest.raises(ValueError, match='hidden widths'):
        MLPRegressionHead(128, 17, RegressionCodec((64, 48)), hidden=(0,))
    stu = deeppose_resnet('cpu')
    with pytest.raises(ValueError, match='must be a heatmap model'):
        tcd_losses(stu, freeze(build_model('regression_resnet', 'cpu', input_size=(64, 48))))
    with pytest.raises(ValueError, match='frozen'):
        tcd_losses(stu, build_model('heatmap_hrnet', 'cpu', input_size=(64, 48)))
    with pytest.raises(ValueError, match='regression PoseModel'):
        tcd_losses(m, freeze(build_model('heatmap_hrnet', 'cpu', input_size=(64, 48))))


def test_losses_zero_at_agreement_and_one_directional():
    codec = HeatmapCodec((64, 48), (16, 12), 1.0)
    kp = torch.tensor([[[10., 20.], [30., 40.], [24., 8.]]])
    u = normalise_coords(kp, (64, 48))
    hm = codec.encode(kp)['heatmaps']
    torch.testing.assert_close(render_heatmaps(u, (16, 12), 1.0), hm, atol=1e-5, rtol=0)
    assert float(task_kd_loss(u, u)) == 0 and float(cross_rep_loss(u, hm, 1.0)) < 1e-10
    u_off = (u + 0.04).requires_grad_()
    hm_g = hm.clone().requires_grad_()
    (task_kd_loss(u_off, u) + cross_rep_loss(u_off, hm_g, 1.0)).backward()
    assert u_off.grad.abs().sum() > 0 and hm_g.grad is None
    # a joint with weight 0 does not count
    w = torch.tensor([[1., 0., 1.]])
    far = u_off.detach().clone(); far[0, 1] += 0.3
    assert torch.isclose(task_kd_loss(far, u, w), task_kd_loss(u_off.detach(), u, w))
    # the cross loss pulls a nearby point towards the heatmap's peak
    p = (u[:, :1] + torch.tensor([0.03, 0.])).requires_grad_()
    cross_rep_loss(p, hm[:, :1], 1.0).backward()
    assert p.grad[0, 0, 0] > 0                                      # gradient descent moves x back (left)


def test_model_loss_terms_and_weights():
    m = ocd_resnet('cpu')
    assert (m.w_task, m.w_cross) == (DEFAULT_WEIGHTS['w_task'], DEFAULT_WEIGHTS['w_cross'])
    out = m(torch.randn(2, 3, 64, 48))
    batch = {'keypoints_64x48': torch.rand(2, 17, 2) * 40, 'visible': torch.full((2, 17), 2)}
    assert sorted(m.loss(out, batch)) == ['loss_coord', 'loss_heatmap', 'ocd_cross', 'ocd_task']
    assert sorted(ocd_resnet('cpu', w_task=0., w_cross=0.).loss(out, batch)) == ['loss_coord', 'loss_heatmap']


@pytest.mark.parametrize('name', ['deeppose', 'deeppose_reduced', 'ocd', 'ocd_reduced', 'ocd_teacher'])
def test_recipe_two_steps(name):
    r = run_recipe(name, 'cpu', seed=0, teacher=False, **TINY)
    assert r.metrics['steps'] == 2 and r.metrics['input'] == '64x48'
    if name.startswith('ocd') and name != 'ocd_teacher':
        assert isinstance(r.model, OCDModel)
        assert {'ocd_task', 'ocd_cross', 'loss_heatmap'} <= set(r.trainer.steps_log)


@pytest.mark.parametrize('cached', [False, True])
def test_tcd_recipe_two_steps(cached):
    teacher = freeze(build_model('heatmap_hrnet', 'cpu', input_size=(64, 48)))
    cache = None
    if cached:
        from posedistill.recipes import make_datasets
        train, _ = make_datasets(get_recipe('tcd', n_train=64, n_val=32))
        cache = TeacherCache.build(teacher, train, keys=('heatmaps',), progress=False)
    extra, lw = tcd_losses(deeppose_resnet('cpu'), teacher, cache=cache)
    r = run_recipe('tcd', 'cpu', seed=0, teacher=False if cached else teacher, extra_losses=extra, loss_weights=lw,
                   **TINY)
    assert r.metrics['steps'] == 2
    assert {'tcd_task', 'tcd_cross', 'loss_coord'} <= set(r.trainer.steps_log)
    assert all(v == v for v in r.trainer.steps_log['tcd_cross'])      # finite, not NaN
