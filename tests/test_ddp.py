"""posedistill.train under several processes: 2 CPU processes with the gloo backend.

- `Trainer` joins the process group from RANK / WORLD_SIZE / LOCAL_RANK, wraps the student in DDP and splits the data:
  after training, both ranks hold the same weights, equal (to rounding) to ONE process with twice the batch size.
- A NaN on one rank only stops both ranks (no hang).
- `train_main` runs under `torchrun --nproc_per_node 2`; only rank 0 writes the checkpoint.
"""
import os, socket, subprocess, sys, textwrap
from pathlib import Path
import pytest
import torch
import torch.multiprocessing as mp
from torch.utils.data import DataLoader

from posedistill.train import Trainer, TinyPose, RandomPoses, NonFiniteLossError, set_seed, load_checkpoint

N, BATCH, EPOCHS = 32, 4, 2          # per rank: 4 steps per epoch, 8 steps in all


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def flat(m) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in m.parameters()])


def make_trainer(batch_size, ckpt_dir=None, extra_losses=None):
    set_seed(0)
    model = TinyPose(17, (32, 24), width=8)           # no dropout: one process with 2x the batch is the same optimisation
    dl = DataLoader(RandomPoses(N, sizes=((32, 24),)), batch_size=batch_size, shuffle=True)
    # SGD, not Adam: Adam divides by sqrt(v) + eps, which turns the last-bit differences of a gradient summed in
    # another order into visible differences for parameters whose gradient is ~0. With SGD they stay ~1e-10.
    return Trainer(model, dl, epochs=EPOCHS, opt='sgd', lr=0.5, warmup_steps=2, clip_grad=1.0, device='cpu', seed=0,
                   ckpt_dir=ckpt_dir, extra_losses=extra_losses, progress=False, live_plot=False)


class NaNOnRank1:
    "An extra loss term that is NaN on rank 1 only, from step 3 on."
    def __init__(self): self.trainer = None
    def __call__(self, s_out, t_out, batch):
        z = s_out['coords'].sum() * 0
        return z + float('nan') if (self.trainer.rank == 1 and self.trainer.step >= 3) else z


def _worker(rank, world, port, out_dir, mode):
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    out = Path(out_dir)
    t = None
    try:
        if mode == 'train':
            t = make_trainer(BATCH, ckpt_dir=out / f'ckpt_rank{rank}')
            assert t.world_size == world and t.rank == rank and isinstance(t.ddp_model, torch.nn.parallel.DistributedDataParallel)
            t.fit()
            gathered = [torch.empty_like(flat(t.model)) for _ in range(world)]
            torch.distributed.all_gather(gathered, flat(t.model))
            torch.save({'weights': flat(t.model), 'gathered': gathered, 'step': t.step, 'history': t.history,
                        'indices': t.train_dl.sampler.num_samples}, out / f'rank{rank}.pt')
        else:
            bad = NaNOnRank1()
            t = make_trainer(BATCH, extra_losses={'kd_bad': bad}); bad.trainer = t
            try: t.fit(); (out / f'rank{rank}.txt').write_text('no error')
            except NonFiniteLossError as e: (out / f'rank{rank}.txt').write_text(str(e))
    finally:
        if torch.distributed.is_initialized():
            # as train_main does: drop the DDP wrapper while the group is alive and leave together; otherwise a rank
            # can abort at exit ("terminate called without an active exception") and fail the test for the wrong reason
            if t is not None: t.close()
            try: torch.distributed.barrier()
            finally: torch.distributed.destroy_process_group()


def spawn(tmp_path, mode):
    ctx = mp.start_processes(_worker, args=(2, free_port(), str(tmp_path), mode), nprocs=2, join=False, start_method='spawn')
    for _ in range(120):                  # at most ~60 s; a hang fails the test instead of blocking the suite
        if ctx.join(timeout=0.5): return
    for p in ctx.processes: p.kill()
    pytest.fail(f'the {mode!r} processes did not finish within 60 s (a hang?)')


def test_ddp_ranks_agree_and_match_one_process(tmp_path):
    spawn(tmp_path, 'train')
    r0, r1 = torch.load(tmp_path / 'rank0.pt', weights_only=True), torch.load(tmp_path / 'rank1.pt', weights_only=True)
    assert torch.equal(r0['weights'], r1['weights'])                           # the ranks agree ...
    assert torch.equal(r0['gathered'][0], r0['gathered'][1])
    assert r0['step'] == r1['step'] == EPOCHS * N // (2 * BATCH) and r0['indices'] == N // 2
    assert r0['history']['loss'] == r1['history']['loss']                      # logged values are means over ranks
    single = make_trainer(2 * BATCH); single.fit()                              # ... and equal one process with 2x the batch
    ref = flat(single.model)
    init = (set_seed(0), flat(TinyPose(17, (32, 24), width=8)))[1]
    assert (r0['weights'] - init).abs().max() > 1e-3                          # (training did move the weights)
    assert torch.allclose(r0['weights'], ref, atol=1e-6, rtol=0), (r0['weights'] - ref).abs().max()
    assert r0['history']['loss'] == pytest.approx(single.history['loss'], rel=1e-4)
    # only rank 0 writes checkpoints
    assert (tmp_path / 'ckpt_rank0' / 'last.pt').is_file() and not (tmp_path / 'ckpt_rank1').exists()
    assert load_checkpoint(tmp_path / 'ckpt_rank0' / 'last.pt')['config']['world_size'] == 2


def test_nan_on_one_rank_stops_every_rank(tmp_path):
    spawn(tmp_path, 'nan')
    for r in (0, 1):
        msg = (tmp_path / f'rank{r}.txt').read_text()
        assert "loss term 'kd_bad' is nan at epoch 1/2, batch 4/4 (optimiser step 3)" in msg, msg


def test_train_main_under_torchrun(tmp_path):
    script = tmp_path / 'run.py'
    script.write_text(textwrap.dedent('''
        import torch; torch.set_num_threads(1)
        from posedistill.train import train_main
        t = train_main()
        print(f"RANK {t.rank} OF {t.world_size} EPOCH {t.epoch}")
    '''))
    out = tmp_path / 'out'
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_addr', '127.0.0.1',
           '--master_port', str(free_port()), str(script), '--model', 'tiny', '--data', 'random', '--input-size', '32x24',
           '--train-samples', '16', '--val-samples', '8', '--batch-size', '4', '--epochs', '2', '--device', 'cpu',
           '--out', str(out), '--no-progress']
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert 'RANK 0 OF 2 EPOCH 2' in p.stdout and 'RANK 1 OF 2 EPOCH 2' in p.stdout, p.stdout
    st = load_checkpoint(out / 'last.pt')
    assert st['epoch'] == 2 and st['step'] == 2 * 16 // 8 and st['config']['world_size'] == 2
    assert len(st['history']['valid_PCK']) == 2
