"""posedistill.train: exact resume, checkpoint safety, the NaN guard, the frozen teacher, schedules, evaluation.

Everything runs on CPU with the tiny stand-ins `TinyPose` / `RandomPoses` (a few steps per test)."""
import os, copy, json
from pathlib import Path
import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

from posedistill.train import (Trainer, TinyPose, RandomPoses, NonFiniteLossError, Callback, set_seed, lr_factor,
                               load_checkpoint, save_checkpoint, collect_predictions, evaluate, train_main)

torch.set_num_threads(1)
QUIET = dict(progress=False, live_plot=False)


def weights(m):
    return torch.cat([p.detach().flatten() for p in m.state_dict().values() if p.is_floating_point()])


def make(seed=0, epochs=4, n=40, batch_size=8, width=8, dropout=0.1, noise=0.1, workers=0, model=None, **kw):
    "A fresh model (initialised from `seed`) and trainer; dropout and noise make the RNG states matter."
    set_seed(seed)
    model = model or TinyPose(17, (32, 24), width=width, dropout=dropout)
    dl = DataLoader(RandomPoses(n, sizes=((32, 24),), noise=noise), batch_size=batch_size, shuffle=True, num_workers=workers)
    kw = {**dict(lr=3e-3, warmup_epochs=0.5, clip_grad=1.0, seed=seed), **QUIET, **kw}
    return Trainer(model, dl, epochs=epochs, **kw)


# ---------------------------------------------------------------- resume

def test_resume_gives_the_same_weights(tmp_path):
    full = make(epochs=4); full.fit()
    make(epochs=4, ckpt_dir=tmp_path).fit(2)                       # the run "dies" after epoch 2
    set_seed(1234); torch.rand(10); np.random.rand(5)                # a new process: other RNG states
    res = make(seed=0, epochs=4, ckpt_dir=tmp_path)
    res.model.load_state_dict(TinyPose(17, (32, 24), width=8, dropout=0.1).state_dict())   # other initial weights
    res.resume(tmp_path / 'last.pt')
    assert (res.epoch, res.step) == (2, 10)
    res.fit()
    assert torch.equal(weights(res.model), weights(full.model))
    assert res.history['loss'] == full.history['loss']
    assert res.steps_log['lr'] == full.steps_log['lr']
    # the optimiser's moments are the same too
    for a, b in zip(res.opt.state_dict()['state'].values(), full.opt.state_dict()['state'].values()):
        assert torch.equal(a['exp_avg'], b['exp_avg']) and torch.equal(a['exp_avg_sq'], b['exp_avg_sq'])


def test_resume_from_a_folder_and_step_schedule(tmp_path):
    kw = dict(schedule='step', milestones=(1, 2), gamma=0.5, warmup_steps=2)
    full = make(epochs=3, **kw); full.fit()
    make(epochs=3, ckpt_dir=tmp_path, **kw).fit(1)
    res = make(epochs=3, ckpt_dir=tmp_path, **kw).resume(tmp_path)     # a folder: its last.pt
    res.fit()
    assert torch.equal(weights(res.model), weights(full.model))
    spe = full.steps_per_epoch
    want = [3e-3 * lr_factor(t, 3 * spe, 2, 'step', (spe, 2 * spe), 0.5) for t in range(3 * spe)]
    assert np.allclose(full.steps_log['lr'], want) and np.allclose(res.steps_log['lr'], want)
    assert full.steps_log['lr'][0] == pytest.approx(1.5e-3) and full.steps_log['lr'][-1] == pytest.approx(0.75e-3)


def test_resume_with_worker_processes(tmp_path):
    "Worker seeds come from the loader's generator, reseeded per epoch: the noise drawn in workers repeats too."
    full = make(epochs=2, n=24, workers=2); full.fit()
    make(epochs=2, n=24, workers=2, ckpt_dir=tmp_path).fit(1)
    res = make(epochs=2, n=24, workers=2, ckpt_dir=tmp_path).resume(tmp_path)
    res.fit()
    assert torch.equal(weights(res.model), weights(full.model))


class Order(Callback):
    "Records the sample indices of every epoch."
    def __init__(self): self.epochs = {}
    def after_step(self, t): self.epochs.setdefault(t.epoch, []).extend(t.batch['index'].tolist())


def test_data_order_is_a_function_of_seed_and_epoch(tmp_path):
    a, b = Order(), Order()
    make(epochs=3, n=24, callbacks=[a]).fit()
    make(epochs=3, n=24, ckpt_dir=tmp_path).fit(1)
    make(epochs=3, n=24, ckpt_dir=tmp_path, callbacks=[b]).resume(tmp_path).fit()
    assert all(sorted(o) == list(range(24)) for o in a.epochs.values())
    assert a.epochs[0] != a.epochs[1] != a.epochs[2]                     # reshuffled every epoch
    assert b.epochs == {1: a.epochs[1], 2: a.epochs[2]}                   # the resumed run sees the same batches
    c = Order(); make(seed=5, epochs=1, n=24, callbacks=[c]).fit()
    assert c.epochs[0] != a.epochs[0]


def test_same_seed_same_weights_other_seed_other_weights():
    a, b, c = make(seed=0, epochs=2), make(seed=0, epochs=2), make(seed=1, epochs=2)
    for t in (a, b, c): t.fit()
    assert torch.equal(weights(a.model), weights(b.model))
    assert not torch.equal(weights(a.model), weights(c.model))


def test_checkpoint_contents_load_with_weights_only(tmp_path):
    t = make(epochs=1, ckpt_dir=tmp_path); t.fit()
    st = torch.load(tmp_path / 'last.pt', weights_only=True)
    assert {'model', 'optimizer', 'scheduler', 'scaler', 'epoch', 'step', 'history', 'rng', 'config'} <= set(st)
    assert st['epoch'] == 1 and st['step'] == t.steps_per_epoch and st['config']['lr'] == 3e-3
    assert torch.equal(weights(t.model), torch.cat([v.flatten() for v in st['model'].values() if v.is_floating_point()]))


# ---------------------------------------------------------------- failures

class NaNFrom:
    "An extra loss term: 0 (with a gradient) until the trainer's step reaches k, then NaN."
    def __init__(self, k): self.k, self.trainer = k, None
    def __call__(self, s_out, t_out, batch):
        z = s_out['coords'].sum() * 0
        return z + float('nan') if self.trainer.step >= self.k else z


def test_nan_stops_before_the_checkpoint_is_overwritten(tmp_path):
    bad = NaNFrom(7)
    t = make(epochs=3, n=40, ckpt_dir=tmp_path, extra_losses={'kd_bad': bad})     # 5 steps per epoch
    bad.trainer = t
    with pytest.raises(NonFiniteLossError) as e:
        t.fit()
    msg = str(e.value)
    assert "loss term 'kd_bad' is nan" in msg and 'epoch 2/3, batch 3/5 (optimiser step 7)' in msg
    assert str(tmp_path / 'last.pt') in msg and 'was not overwritten' in msg
    st = load_checkpoint(tmp_path / 'last.pt')                                      # intact and loadable
    assert st['epoch'] == 1 and all(torch.isfinite(v).all() for v in st['model'].values())
    assert not (tmp_path / 'prev.pt').exists()                                      # no second save happened
    # and training goes on from it
    with pytest.warns(UserWarning, match=r"different configuration: extra_losses: \['kd_bad'\] -> \[\]"):
        good = make(epochs=3, n=40, ckpt_dir=tmp_path).resume(tmp_path)
    good.fit()
    assert good.epoch == 3


def test_nan_in_the_model_loss_is_named():
    class Broken(TinyPose):
        def loss(self, out, batch): return {'heatmap': out['coords'].sum() * float('inf'), **super().loss(out, batch)}
    t = make(epochs=1, model=Broken(17, (32, 24), width=8))
    with pytest.raises(NonFiniteLossError, match=r"loss term 'heatmap' is (inf|nan) at epoch 1/1, batch 1/5 \(optimiser step 0\)"):
        t.fit()


def test_crash_while_saving_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    t = make(epochs=3, ckpt_dir=tmp_path); t.fit(1)
    before = (tmp_path / 'last.pt').read_bytes()
    real_save = torch.save
    def dying_save(obj, f, *a, **k):
        f.write(b'half a checkpoint'); raise OSError('No space left on device')
    monkeypatch.setattr(torch, 'save', dying_save)
    with pytest.raises(OSError, match='No space left'):
        t.fit(1)
    monkeypatch.setattr(torch, 'save', real_save)
    assert (tmp_path / 'last.pt').read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ['last.log.json', 'last.pt']  # no temporary file left behind
    assert json.loads((tmp_path / 'last.log.json').read_text())['step'] == load_checkpoint(tmp_path / 'last.pt')['step']


def test_corrupted_checkpoint_is_named_and_prev_survives(tmp_path):
    make(epochs=3, ckpt_dir=tmp_path).fit(2)
    last, prev = tmp_path / 'last.pt', tmp_path / 'prev.pt'
    assert load_checkpoint(prev)['epoch'] == 1
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])                 # truncated
    with pytest.raises(ValueError) as e:
        make(epochs=3).resume(last)
    assert f'checkpoint {last} is corrupted' in str(e.value) and str(prev) in str(e.value)
    last.write_bytes(b'\x00' * 64)                                                   # garbage
    with pytest.raises(ValueError, match='is corrupted'):
        make(epochs=3).resume(last)
    t = make(epochs=3).resume(prev)                                                  # the previous one still works
    assert t.epoch == 1
    with pytest.raises(FileNotFoundError, match='checkpoint file not found'):
        make(epochs=3).resume(tmp_path / 'nope.pt')


def test_other_architecture_lists_mismatched_keys(tmp_path):
    make(epochs=1, ckpt_dir=tmp_path).fit()
    class Bigger(TinyPose):
        def __init__(self):
            super().__init__(17, (32, 24), width=8); self.extra = nn.Linear(2, 2)
    with pytest.raises(ValueError) as e:
        make(epochs=1, model=Bigger()).resume(tmp_path)
    assert 'missing keys' in str(e.value) and 'extra.weight' in str(e.value) and str(tmp_path / 'last.pt') in str(e.value)
    with pytest.raises(ValueError, match=r'net.0.weight: checkpoint \(8, 5, 3, 3\) vs model \(16, 5, 3, 3\)'):
        make(epochs=1, width=16).resume(tmp_path)
    with pytest.raises(ValueError, match='not a Trainer checkpoint'):
        save_checkpoint(tmp_path / 'w.pt', {'model': TinyPose(17, (32, 24), width=8).state_dict()})
        make(epochs=1).resume(tmp_path / 'w.pt')


def test_empty_dataset_fails_before_training(tmp_path):
    with pytest.raises(ValueError, match='train_dl is empty'):
        Trainer(TinyPose(), DataLoader(RandomPoses(0)), epochs=1, ckpt_dir=tmp_path / 'ck', **QUIET)
    assert not (tmp_path / 'ck').exists()
    with pytest.raises(ValueError, match='train_dl yields no batches'):
        Trainer(TinyPose(), DataLoader(RandomPoses(5), batch_size=8, drop_last=True), epochs=1, **QUIET)
    with pytest.raises(ValueError, match='epochs must be an int >= 1'):
        Trainer(TinyPose(), DataLoader(RandomPoses(5)), epochs=0, **QUIET)


# ---------------------------------------------------------------- teacher, extra terms, hooks

class Teacher(TinyPose):
    "A TinyPose with BatchNorm and dropout (both would change in train mode) that records its input sizes."
    def __init__(self):
        super().__init__(17, (64, 48), width=8)
        self.net.insert(1, nn.BatchNorm2d(8)); self.net[3].p = 0.5
        self.seen = []
    def forward(self, x):
        self.seen.append(tuple(x.shape[-2:])); return super().forward(x)


def test_frozen_teacher_never_changes_and_stays_in_eval():
    teacher = Teacher()
    before = copy.deepcopy(teacher.state_dict())
    set_seed(0)
    student = TinyPose(17, (32, 24), width=8)
    student.teacher_ref = teacher                     # even as a sub-module of the student, it must stay frozen
    kd = lambda s, t, b: (s['coords'] - t['coords']).abs().mean()
    dl = DataLoader(RandomPoses(16, sizes=((64, 48), (32, 24))), batch_size=8, shuffle=True)
    t = Trainer(student, dl, teacher=teacher, extra_losses={'kd_coords': kd}, loss_weights={'kd_coords': 0.5, 'coords': 2.},
                student_input='image_32x24', teacher_input='image_64x48', epochs=2, **QUIET)
    t.model.train(); teacher.train()
    t.fit()
    t.model.train()
    assert not any(m.training for m in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())
    for k, v in teacher.state_dict().items(): assert torch.equal(v, before[k]), k      # BN running stats included
    assert set(teacher.seen) == {(64, 48)}
    log = t.steps_log
    assert np.allclose(log['loss'], [2 * c + 0.5 * k for c, k in zip(log['coords'], log['kd_coords'])], rtol=1e-5)
    assert list(t.history)[:3] == ['coords', 'kd_coords', 'loss'] and len(t.history['kd_coords']) == 2
    assert t.history['kd_coords'][0] == pytest.approx(np.mean(log['kd_coords'][:2]))


def test_loss_module_parameters_are_trained_and_checkpointed(tmp_path):
    class LearnedWeight(nn.Module):          # e.g. a projector or a learnable temperature of a KD method
        def __init__(self): super().__init__(); self.s = nn.Parameter(torch.tensor(1.))
        def forward(self, s_out, t_out, batch): return (self.s * s_out['coords']).square().mean()
    mod = LearnedWeight()
    t = make(epochs=2, ckpt_dir=tmp_path, extra_losses={'learned': mod}); t.fit()
    assert mod.s.item() != 1.
    st = load_checkpoint(tmp_path / 'last.pt')
    assert torch.equal(st['loss_modules']['learned']['s'], mod.s.detach())
    mod2 = LearnedWeight()
    make(epochs=2, extra_losses={'learned': mod2}).resume(tmp_path)
    assert mod2.s.item() == mod.s.item()


def test_callbacks_see_every_step_and_can_stop():
    class Rec(Callback):
        def __init__(self): self.calls = []
        def before_fit(self, t): self.calls.append('fit')
        def before_epoch(self, t): self.calls.append('epoch')
        def after_step(self, t): self.calls.append(round(t.logs['loss'], 6))
        def after_epoch(self, t):
            self.calls.append('end'); t.stop = t.epoch == 2
        def after_fit(self, t): self.calls.append('done')
    rec = Rec()
    t = make(epochs=5, n=16, callbacks=[rec]); t.fit()
    assert t.epoch == 2
    assert [c for c in rec.calls if isinstance(c, str)] == ['fit', 'epoch', 'end', 'epoch', 'end', 'done']
    assert [c for c in rec.calls if not isinstance(c, str)] == [round(v, 6) for v in t.steps_log['loss']]


def test_live_plot_is_off_outside_jupyter():
    from posedistill.train import LivePlot
    assert not any(isinstance(c, LivePlot) for c in make(epochs=1, live_plot='auto').callbacks)


# ---------------------------------------------------------------- evaluation

class ConstPose(nn.Module):
    "predict() -> joint k at (k, 1) whatever the image (to check the flip-test arithmetic)."
    input_size = (32, 24)
    def __init__(self): super().__init__(); self.p = nn.Parameter(torch.zeros(1))
    def predict(self, x):
        k = torch.arange(17.)
        return torch.stack([k, torch.ones(17)], -1).expand(len(x), 17, 2), torch.ones(len(x), 17)


def test_flip_test_flips_back_and_swaps_joints():
    from posedistill.keypoints import COCO17
    dl = DataLoader(RandomPoses(4, sizes=((32, 24),)), batch_size=2)
    r = collect_predictions(ConstPose(), dl, flip_test=True)
    fi = np.array(COCO17.flip_indices)
    want = (np.arange(17) + (24 - 1 - fi)) / 2                   # x averaged with the flipped-back, swapped x
    assert np.allclose(r['pred'][..., 0], want) and np.allclose(r['pred'][..., 1], 1.)
    assert r['pred'].shape == (4, 17, 2) and r['keypoints'].shape == (4, 17, 2)


class Oracle(nn.Module):
    "predict() returns the ground-truth crop keypoints of the sample whose image it is given."
    def __init__(self, ds):
        super().__init__(); self.p = nn.Parameter(torch.zeros(1))
        self.samples = [(s['image'], s['keypoints'], s['visible']) for s in (ds[i] for i in range(len(ds)))]
        self.input_size = tuple(ds[0]['image'].shape[-2:])
    def predict(self, x):
        kp, vis = zip(*[next((k, v) for im, k, v in self.samples if torch.equal(im, img)) for img in x])
        return torch.stack(kp), (torch.stack(vis) > 0).float()     # people with no labelled joint get score 0


def test_evaluate_pck_and_coco_with_an_oracle():
    from posedistill.data import COCOPose, test_data_path
    d = test_data_path('coco')
    ds = COCOPose(d / 'test_coco.json', d, split='val', input_size=(64, 48))
    dl = DataLoader(ds, batch_size=4)
    oracle = Oracle(ds)
    assert evaluate(oracle, dl, 'pck', thr=0.01)['PCK'] == pytest.approx(100.)
    ap = evaluate(oracle, dl, 'coco', coco_gt=d / 'test_coco.json')
    assert ap['AP'] == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(ValueError, match="metric='coco' needs coco_gt"):
        evaluate(oracle, dl, 'coco')


def test_evaluate_mpii_with_an_oracle():
    from posedistill.data import MPIIPose, test_data_path
    d = test_data_path('mpii')
    ds = MPIIPose(d / 'test_mpii.json', d, split='val', input_size=(64, 64))
    dl = DataLoader(ds, batch_size=8)
    hb = np.array([[[0., 0.], [60., 60.]]] * len(ds))
    assert evaluate(Oracle(ds), dl, 'mpii', headboxes=hb)['PCKh'] == pytest.approx(100.)
    with pytest.raises(ValueError, match=r'headboxes must have shape \(N, 2, 2\)'):
        evaluate(Oracle(ds), dl, 'mpii', headboxes=hb[:2])


def test_train_main_tiny_random(tmp_path):
    args = ['--model', 'tiny', '--data', 'random', '--input-size', '32x24', '--train-samples', '16', '--val-samples', '8',
            '--batch-size', '8', '--epochs', '1', '--out', str(tmp_path), '--no-progress']
    t = train_main(args)
    assert t.epoch == 1 and 'valid_PCK' in t.history and (tmp_path / 'last.pt').is_file()


# ---------------------------------------------------------------- with the model zoo

def test_zoo_model_resume_and_flip_test(tmp_path):
    "A real PoseModel (BatchNorm buffers, its own loss names and its own flip test) through the same checks."
    from posedistill.models import build_model
    zoo = lambda: (set_seed(0), build_model('regression_stemnet', 'cpu', input_size=(32, 24)))[1]
    full = make(epochs=3, n=24, model=zoo()); full.fit()
    make(epochs=3, n=24, model=zoo(), ckpt_dir=tmp_path).fit(1)
    res = make(epochs=3, n=24, model=zoo(), ckpt_dir=tmp_path).resume(tmp_path); res.fit()
    assert torch.equal(weights(res.model), weights(full.model))                      # BN running stats included
    assert 'loss_coord' in full.history
    dl = DataLoader(RandomPoses(6, sizes=((32, 24),)), batch_size=3)
    r = collect_predictions(full.model, dl, flip_test=True)
    x = torch.cat([b['image'] for b in dl])
    assert np.allclose(r['pred'], full.model.predict(x, flip_test=True)[0].numpy(), atol=1e-5)
    assert not np.allclose(r['pred'], full.model.predict(x)[0].numpy(), atol=1e-5)


def test_train_main_zoo_model_on_synthpose(tmp_path):
    args = ['--model', 'regression_stemnet', '--size', 'cpu', '--input-size', '32x24', '--data', 'synthpose',
            '--train-samples', '16', '--val-samples', '8', '--batch-size', '8', '--epochs', '1', '--out', str(tmp_path),
            '--no-progress']
    t = train_main(args)
    assert t.config['model'] == 'PoseModel' and t.model.input_size == (32, 24)
    assert t.epoch == 1 and 0 <= t.history['valid_PCK'][0] <= 100 and 'loss_coord' in t.history
    assert load_checkpoint(tmp_path / 'last.pt')['epoch'] == 1
    no_val = list(args); no_val[no_val.index('--val-samples') + 1] = '0'
    no_val.remove('--out'); no_val.remove(str(tmp_path))
    t2 = train_main(no_val)
    assert t2.valid_dl is None and 'valid_PCK' not in t2.history                              # --val-samples 0: no validation
